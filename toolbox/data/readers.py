"""Readers of the datasets' published file formats -> (train_x, train_y, test_x, test_y).

Images come back as float32 tensors [N, C, H, W] in [0, 1], labels as int64. Only formats that
carry plain bytes are read: IDX for MNIST/Fashion-MNIST, the *binary* CIFAR archives and SVHN's
MATLAB v5 files; the pickled CIFAR "python version" is never opened, as unpickling a downloaded
file would run whatever code it holds. A file that does not parse is reported in one line naming
the file and the fix.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import RunError
from . import download

IDX_UBYTE = 0x08  # IDX type code for unsigned bytes, the only one MNIST and Fashion-MNIST use
CIFAR_RECORD_PIXELS = 3 * 32 * 32


def load_digits():
    """scikit-learn's bundled 8x8 digits, values/16, with a fixed split: within each class, in
    dataset order, every fourth sample (index % 4 == 3) is a test sample (1352 train / 445 test)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = bunch.data.reshape(-1, 1, 8, 8) / 16.0
    y = bunch.target
    rank = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        rank[members] = np.arange(len(members))
    test = rank % 4 == 3
    return _tensors(x[~test], y[~test], x[test], y[test], scale=1.0)


def load_mnist():
    return _load_idx_dataset("mnist")


def load_fashion_mnist():
    return _load_idx_dataset("fashion-mnist")


def load_cifar10():
    folder = download.require("cifar10")
    train = [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)]
    test = "cifar-10-batches-bin/test_batch.bin"
    parts = _cifar_members(folder / "cifar-10-binary.tar.gz", folder, [*train, test])
    train_x, train_y = zip(*(_cifar_records(*parts[m], label_bytes=1, num_classes=10) for m in train))
    test_x, test_y = _cifar_records(*parts[test], label_bytes=1, num_classes=10)
    return _tensors(np.concatenate(train_x), np.concatenate(train_y), test_x, test_y)


def load_cifar100():
    folder = download.require("cifar100")
    train, test = "cifar-100-binary/train.bin", "cifar-100-binary/test.bin"
    parts = _cifar_members(folder / "cifar-100-binary.tar.gz", folder, [train, test])
    # records are <coarse label><fine label><pixels>; the 100-class task uses the fine label
    train_x, train_y = _cifar_records(*parts[train], label_bytes=2, num_classes=100)
    test_x, test_y = _cifar_records(*parts[test], label_bytes=2, num_classes=100)
    return _tensors(train_x, train_y, test_x, test_y)


def load_svhn():
    folder = download.require("svhn")
    return _tensors(*_svhn_mat(folder / "train_32x32.mat"), *_svhn_mat(folder / "test_32x32.mat"))


TINY = "tiny-imagenet-200"
TINY_SIZE = 64


def load_tiny_imagenet():
    """Tiny-ImageNet in its published layout, from the unpacked folder or straight from the zip (nothing
    is extracted): classes = the wnids of wnids.txt in sorted order; train/<wnid>/images/*.JPEG; the
    labelled val/images/*.JPEG (val_annotations.txt: file, wnid, box) serve as the test split. Every image
    becomes RGB (a few are grayscale JPEGs)."""
    folder = download.require("tiny-imagenet")
    with _TinyFiles(folder) as files:
        wnids = sorted({w.strip() for w in files.text("wnids.txt").splitlines() if w.strip()})
        if len(wnids) != 200:
            raise _corrupt(files.where, f"wnids.txt lists {len(wnids)} classes, expected 200")
        label = {w: i for i, w in enumerate(wnids)}
        train = [(m, label[w]) for w in wnids for m in files.listing(f"train/{w}/images/")]
        test = []
        for line in files.text("val/val_annotations.txt").splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in label:
                raise _corrupt(files.where, f"val_annotations.txt names class {parts[1]}, which wnids.txt lacks")
            test.append((f"val/images/{parts[0]}", label[parts[1]]))
        if not train or not test:
            raise _corrupt(files.where, f"{len(train)} training and {len(test)} validation images found")
        train_x = np.stack([files.rgb(m) for m, _ in train])
        test_x = np.stack([files.rgb(m) for m, _ in test])
    return _tensors(train_x, [y for _, y in train], test_x, [y for _, y in test])


class _TinyFiles:
    """Members of tiny-imagenet-200/ from the unpacked folder if it is there, else from the zip."""

    def __init__(self, folder: Path):
        self.root = folder / TINY
        self.zip = None
        if not (self.root / "wnids.txt").is_file():
            self.where = folder / "tiny-imagenet-200.zip"
            try:
                self.zip = zipfile.ZipFile(self.where)
                self.names = sorted(n for n in self.zip.namelist() if not n.endswith("/"))
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise _corrupt(self.where, str(e)) from e
        else:
            self.where = self.root

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.zip is not None:
            self.zip.close()

    def read(self, member: str) -> bytes:
        try:
            if self.zip is None:
                return (self.root / member).read_bytes()
            return self.zip.read(f"{TINY}/{member}")
        except (KeyError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise _corrupt(self.where, f"{member}: {e}") from e

    def text(self, member: str) -> str:
        return self.read(member).decode("utf-8", errors="replace")

    def listing(self, prefix: str) -> list[str]:
        """Image members under ``prefix``, sorted."""
        if self.zip is None:
            folder = self.root / prefix
            found = sorted(p.name for p in folder.iterdir() if p.suffix.upper() == ".JPEG") if folder.is_dir() else []
            return [prefix + n for n in found]
        start = f"{TINY}/{prefix}"
        return [n[len(TINY) + 1:] for n in self.names if n.startswith(start) and n.upper().endswith(".JPEG")]

    def rgb(self, member: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(self.read(member))) as im:
                im = im.convert("RGB")
                if im.size != (TINY_SIZE, TINY_SIZE):
                    im = im.resize((TINY_SIZE, TINY_SIZE), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise _corrupt(self.where, f"{member}: {e}") from e


def _load_idx_dataset(name: str):
    folder = download.require(name)
    splits = []
    for prefix in ("train", "t10k"):
        images, images_path = _idx(folder, f"{prefix}-images-idx3-ubyte.gz", ndim=3)
        labels, labels_path = _idx(folder, f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
        if images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise _corrupt(images_path, f"{'x'.join(map(str, images.shape))} images for {len(labels)} labels, "
                                        f"expected N x 28 x 28 for N labels")
        _check_labels(labels, 10, labels_path)
        splits += [images[:, None], labels]
    return _tensors(*splits)


def _idx(folder: Path, name: str, ndim: int) -> tuple[np.ndarray, Path]:
    """An IDX array of unsigned bytes from ``name`` (gzip) or its unpacked twin without ``.gz``, and
    the file it came from."""
    path = folder / name
    if not path.is_file():
        path = folder / name.removesuffix(".gz")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise _corrupt(path, f"gzip: {e}") from e
    # header: two zero bytes, the element type, the number of dimensions, then each size as big-endian int32
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\0\0" or raw[2] != IDX_UBYTE or raw[3] != ndim:
        raise _corrupt(path, f"not an IDX file of {ndim}-d unsigned bytes (magic {raw[:4].hex() or 'empty'})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    body = memoryview(raw)[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise _corrupt(path, f"header says {'x'.join(map(str, shape))} = {int(np.prod(shape))} bytes, found {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape), path


def _cifar_members(archive: Path, folder: Path, members: list[str]) -> dict[str, tuple[bytes, Path]]:
    """Each named member's bytes and the file they came from: the unpacked folder if all members are
    there, else the archive itself (read in memory: nothing is extracted, so member paths cannot
    escape the folder)."""
    if all((folder / m).is_file() for m in members):
        return {m: ((folder / m).read_bytes(), folder / m) for m in members}
    found = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                if info.name in members and info.isfile():
                    found[info.name] = (tar.extractfile(info).read(), archive)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise _corrupt(archive, str(e)) from e
    absent = [m for m in members if m not in found]
    if absent:
        raise _corrupt(archive, f"it lacks {', '.join(absent)}")
    return found


def _cifar_records(raw: bytes, source: Path, label_bytes: int, num_classes: int):
    record = label_bytes + CIFAR_RECORD_PIXELS
    if not raw or len(raw) % record:
        raise _corrupt(source, f"{len(raw)} bytes is not a whole number of {record}-byte records")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, label_bytes - 1]
    _check_labels(labels, num_classes, source)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), labels


def _svhn_mat(path: Path):
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
        x, y = mat["X"], mat["y"].reshape(-1)
    # scipy reports a cut-off file as any of these, depending on where the cut falls
    except (scipy.io.matlab.MatReadError, ValueError, OSError, EOFError, LookupError, TypeError, zlib.error) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    # published layout: X is H x W x C x N uint8, y holds 1..10 where 10 stands for the digit 0
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise _corrupt(path, f"X is {x.dtype} {x.shape} for {len(y)} labels, expected uint8 32x32x3xN")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise _corrupt(path, f"labels span {y.min()}..{y.max()}, expected 1..10")
    return x.transpose(3, 2, 0, 1), np.where(y == 10, 0, y)


def _check_labels(labels: np.ndarray, num_classes: int, path: Path) -> None:
    if len(labels) and labels.max() >= num_classes:
        raise _corrupt(path, f"label {labels.max()} is out of range for {num_classes} classes")


def _corrupt(path: Path, detail: str) -> RunError:
    return RunError(f"{path} is truncated or corrupt ({detail}); delete it and run again to download it afresh")


def _tensors(train_x, train_y, test_x, test_y, scale: float = 255.0):
    import torch

    def images(a):
        x = np.array(a, dtype=np.float32, order="C")  # one copy, divided in place (CIFAR is 600 MB as float)
        x /= np.float32(scale)
        return torch.from_numpy(x)

    def labels(a):
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    return images(train_x), labels(train_y), images(test_x), labels(test_y)
