"""Where dataset files live on disk and how missing ones are fetched from their official sources.

Data root: ``$TOOLBOX_DATA``, else ``$XDG_CACHE_HOME/toolbox/data`` (default ``~/.cache/toolbox/data``),
one sub-folder per dataset. A missing file is downloaded to a temporary file beside its final place,
checked against the MD5 its publisher lists, and only then renamed into place, so an interrupted or
tampered download never looks like a dataset. ``TOOLBOX_NO_DOWNLOAD=1`` turns downloading off.
Only the standard library is imported here: the catalog imports this module while plugins load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetMissing, RunError
from ..state import plain_file_mode

CONNECT_TIMEOUT_S = 15


@dataclass(frozen=True)
class Remote:
    """One published file. ``unpacked``: paths (relative to the dataset folder) that stand in for the
    file when a user has already unpacked it, so they need not keep the archive too."""

    file: str
    url: str
    md5: str
    unpacked: tuple[str, ...] = ()


def _idx(base: str, md5s: dict[str, str]) -> tuple[Remote, ...]:
    return tuple(Remote(name, base + name, md5, (name.removesuffix(".gz"),)) for name, md5 in md5s.items())


_CIFAR = "https://www.cs.toronto.edu/~kriz/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"

# MD5 values as published by the datasets' authors (and listed in torchvision's dataset sources).
SOURCES: dict[str, tuple[Remote, ...]] = {
    "mnist": _idx("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }),
    "fashion-mnist": _idx("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }),
    "cifar10": (Remote(
        "cifar-10-binary.tar.gz", _CIFAR + "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
        tuple(f"cifar-10-batches-bin/{n}" for n in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]),
    ),),
    "cifar100": (Remote(
        "cifar-100-binary.tar.gz", _CIFAR + "cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
        ("cifar-100-binary/train.bin", "cifar-100-binary/test.bin"),
    ),),
    "svhn": (
        Remote("train_32x32.mat", _SVHN + "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        Remote("test_32x32.mat", _SVHN + "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    ),
    # CS231n's Tiny-ImageNet (the zip holds train/<wnid>/images/*.JPEG, val/images + val_annotations.txt)
    "tiny-imagenet": (Remote(
        "tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de",
        ("tiny-imagenet-200/wnids.txt", "tiny-imagenet-200/val/val_annotations.txt"),
    ),),
}


def data_root() -> Path:
    if os.environ.get("TOOLBOX_DATA"):
        return Path(os.environ["TOOLBOX_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "toolbox" / "data"


def folder(name: str) -> Path:
    return data_root() / name


def location(name: str) -> str:
    return str(folder(name))


def file_names(name: str) -> tuple[str, ...]:
    return tuple(r.file for r in SOURCES[name])


def missing(name: str) -> list[Remote]:
    where = folder(name)

    def has(r: Remote) -> bool:
        return (where / r.file).is_file() or bool(r.unpacked) and all((where / p).is_file() for p in r.unpacked)

    return [r for r in SOURCES[name] if not has(r)]


def present(name: str) -> bool:
    return not missing(name)


def require(name: str) -> Path:
    """The dataset's folder, with every file in it: downloads what is missing, or raises
    DatasetMissing with one line saying which files to put where and where to get them."""
    where = folder(name)
    absent = missing(name)
    if not absent:
        return where
    if os.environ.get("TOOLBOX_NO_DOWNLOAD", "") not in ("", "0"):
        raise DatasetMissing(_missing_line(name, absent, "TOOLBOX_NO_DOWNLOAD is set"))
    where.mkdir(parents=True, exist_ok=True)
    for r in absent:
        try:
            fetch(r.url, where / r.file, r.md5)
        except OSError as e:  # urllib's URLError and socket timeouts are OSErrors
            reason = getattr(e, "reason", None) or e
            raise DatasetMissing(_missing_line(name, missing(name), f"downloading {r.url} failed: {reason}")) from e
    return where


def fetch(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest`` through a temporary file in the same folder; rename it into place
    only when its MD5 matches. Network failures propagate as OSError; a mismatch is a RunError."""
    import hashlib
    import tempfile
    import urllib.request

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)  # integrity against the published sums, not security
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with Progress(TextColumn("downloading {task.description}"), BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=Console(stderr=True), transient=True,
                          disable=os.environ.get("TOOLBOX_NO_PROGRESS") == "1") as bar:
                task = bar.add_task(dest.name, total=total)
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.advance(task, len(chunk))
        if digest.hexdigest() != md5:
            raise RunError(f"checksum mismatch for {dest.name} downloaded from {url} (md5 {digest.hexdigest()}, "
                           f"expected {md5}); the file was discarded, run again or fetch it by hand into {dest.parent}")
        os.chmod(tmp, plain_file_mode())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _missing_line(name: str, absent: list[Remote], why: str) -> str:
    files = ", ".join(r.file for r in absent)
    if len(absent) == 1:
        source = absent[0].url
    else:
        source = ", ".join(sorted({r.url.rsplit("/", 1)[0] + "/" for r in absent}))
    them = "it" if len(absent) == 1 else "them"
    return f"dataset '{name}' is missing {files} ({why}); put {them} in {folder(name)} (from {source})"
