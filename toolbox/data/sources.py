"""Datasets that are not built in: a folder of class subfolders, or image-classification parquet on the Hub.

Both become an ``ImageTable`` (encoded images, labels, class names, which samples are test samples), and
one path decodes it with Pillow: every image converted to 1 channel (grayscale) or 3 (colour), resized
to the reference's ``image_size`` (default: the modal size), scaled to [0, 1]. Per-channel mean/std of
the training split are cached in ``toolbox_home()/datasets`` beside the data's fingerprint (folders: the
files' paths, sizes and mtimes; Hub: the commit) and recomputed when it changes.

Folders (torchvision's ImageFolder semantics, without torchvision): class = subfolder name, sorted; PNG,
JPEG and WebP files at any depth below it; ``train/`` + ``val/`` (or ``test/``) subfolders give the
split, otherwise a stratified split (``TEST_FRACTION`` of each class, drawn with ``SPLIT_SEED``).

Hub: the parquet files of a dataset repo at one commit (downloaded through huggingface_hub, read with
pyarrow; nothing is unpickled), an image column of encoded bytes (``{"bytes", "path"}`` structs as the
``datasets`` library writes them, or plain binary) and an integer label column; class names from the
features in the card's metadata, dataset_info.json or the parquet schema's ``huggingface`` metadata.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RunError, UsageError
from . import refs

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SPLIT_SEED = 0
TEST_FRACTION = 0.2  # of each class (at least one image of a class with two or more)
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
TRAIN_NAMES = ("train",)
TEST_NAMES = ("val", "validation", "test")


@dataclass
class ImageTable:
    """Encoded images (paths or bytes), int labels, class names, a test mask, and where they came from."""

    ref: str  # the canonical reference (with options)
    blobs: list  # Path or bytes per sample
    names: list[str]  # per sample, for messages (a file path, or 'repo/file.parquet row N')
    labels: np.ndarray
    classes: tuple[str, ...]
    test: np.ndarray  # bool per sample
    source: dict  # kind, where, fingerprint or commit, split: recorded in run.json
    location: str  # shown by `toolbox datasets`
    options: dict = field(default_factory=dict)

    def open(self, i: int):
        blob = self.blobs[i]
        return io.BytesIO(blob) if isinstance(blob, (bytes, bytearray)) else blob


# --- folders -------------------------------------------------------------------------------------

def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and _visible(d)), key=lambda d: d.name)


def _images_in(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
    return found


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    train = next((root / n for n in TRAIN_NAMES if (root / n).is_dir()), None)
    test = next((root / n for n in TEST_NAMES if (root / n).is_dir()), None)
    return (train, test) if train and test else None


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    dirs = _class_dirs(folder)
    if not dirs:
        loose = [p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
        why = f" (it holds {len(loose)} loose images)" if loose else ""
        raise RunError(f"{folder} holds no class subfolders{why}; put each class's images in "
                       f"{folder}/<class name>/ (PNG, JPEG or WebP)")
    found = {d.name: _images_in(d) for d in dirs}
    empty = [folder / c for c, files in found.items() if not files]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise RunError(f"class folder {empty[0]}{more} holds no images (PNG, JPEG or WebP); add images or remove it")
    return found


def fingerprint_files(root: Path, files) -> str:
    digest = hashlib.sha256()
    for p in files:
        st = p.stat()
        digest.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def scan_folder(ref: str) -> ImageTable:
    base, options = refs.split_options(ref)
    root = Path(base)
    if not root.is_dir():
        raise UsageError(f"dataset folder {root} does not exist; give a folder of class subfolders")
    pair = _split_folders(root)
    if pair:
        train_dir, test_dir = pair
        train = _scan_classes(train_dir)
        test = _scan_classes(test_dir)
        unknown = sorted(set(test) - set(train))
        if unknown:
            raise RunError(f"{test_dir / unknown[0]} is a class that {train_dir} lacks; the test split's classes must "
                           "be among the training split's (rename or remove it)")
        classes = tuple(train)
        index = {c: i for i, c in enumerate(classes)}
        pairs = [(p, index[c], False) for c, files in train.items() for p in files]
        pairs += [(p, index[c], True) for c, files in test.items() for p in files]
        split = {"kind": "folders", "train": train_dir.name, "test": test_dir.name}
    else:
        found = _scan_classes(root)
        classes = tuple(found)
        pairs = []
        rng = np.random.default_rng(SPLIT_SEED)
        for label, c in enumerate(classes):
            files = found[c]
            n_test = max(1, int(round(len(files) * TEST_FRACTION))) if len(files) > 1 else 0  # >= 1 to test on
            chosen = set(rng.permutation(len(files))[:n_test].tolist())
            pairs += [(p, label, i in chosen) for i, p in enumerate(files)]
        split = {"kind": "stratified", "test_fraction": TEST_FRACTION, "seed": SPLIT_SEED}
    files = [p for p, _, _ in pairs]
    fp = fingerprint_files(root, files)
    source = {"kind": "folder", "path": str(root), "fingerprint": fp, "files": len(files), "split": split, **options}
    return ImageTable(ref, files, [str(p) for p in files], np.array([y for _, y, _ in pairs], dtype=np.int64), classes,
                      np.array([t for _, _, t in pairs], dtype=bool), source, str(root), options)


# --- decoding --------------------------------------------------------------------------------------

def _bad_image(name: str, e: Exception) -> RunError:
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    return RunError(f"{name} is not a readable image ({detail}); replace or delete it")


def headers(table: ImageTable) -> tuple[list[tuple[int, int]], list[str]]:
    """(width, height) and Pillow mode of every image, from the headers alone."""
    from PIL import Image, UnidentifiedImageError

    sizes, modes = [], []
    for i, name in enumerate(table.names):
        try:
            with Image.open(table.open(i)) as im:
                sizes.append(im.size)
                modes.append(im.mode)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise _bad_image(name, e) from None
    return sizes, modes


def layout(table: ImageTable, sizes, modes) -> tuple[int, int, int]:
    """(channels, height, width) every image is converted to; mixed channel counts are refused unless
    the reference sets ``channels``."""
    channels = table.options.get("channels")
    gray = [m in GRAY_MODES for m in modes]
    if channels is None:
        if all(gray):
            channels = 1
        elif not any(gray):
            channels = 3
        else:
            few, many = (True, False) if sum(gray) <= len(gray) / 2 else (False, True)
            odd = [n for n, g in zip(table.names, gray) if g == few]
            what = "grayscale" if few else "colour"
            shown = ", ".join(odd[:3]) + (f" and {len(odd) - 3} more" if len(odd) > 3 else "")
            raise RunError(f"{table.location} mixes channel counts: {len(odd)} {what} image(s) ({shown}) among "
                           f"{len(gray) - len(odd)} {'colour' if few else 'grayscale'} ones; convert them, or set "
                           "data.channels=3 (or 1) to convert every image")
    size = table.options.get("image_size")
    if size:
        return channels, size, size
    (w, h), _ = collections.Counter(sizes).most_common(1)[0]
    return channels, h, w


def decode(table: ImageTable, i: int, shape) -> np.ndarray:
    """Image i as uint8 [C, H, W] in ``shape``."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with Image.open(table.open(i)) as im:
            im.load()
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _bad_image(table.names[i], e) from None
    return a[None] if c == 1 else a.transpose(2, 0, 1)


def decode_all(table: ImageTable, shape) -> np.ndarray:
    out = np.empty((len(table.blobs), *shape), dtype=np.uint8)
    for i in range(len(table.blobs)):
        out[i] = decode(table, i, shape)
    return out


STATS_CHUNK = 64  # images per float64 temporary when computing statistics (bounds the streamed pass)


def channel_stats(images_uint8) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (population) in [0, 1] of uint8 [N, C, H, W] (an array, or an iterable of
    chunks of ``STATS_CHUNK`` images: the same sums, so the same numbers), accumulated in float64."""
    chunks = ([images_uint8[s:s + STATS_CHUNK] for s in range(0, len(images_uint8), STATS_CHUNK)]
              if isinstance(images_uint8, np.ndarray) else images_uint8)
    total = sq = None
    count = 0
    for part in chunks:
        chunk = part.astype(np.float64) / 255.0
        if total is None:
            total, sq = np.zeros(chunk.shape[1]), np.zeros(chunk.shape[1])
        total += chunk.sum(axis=(0, 2, 3))
        sq += (chunk ** 2).sum(axis=(0, 2, 3))
        count += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(sq / max(count, 1) - mean ** 2, 0.0))
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(max(v, 1e-6)), 6) for v in std)


# --- the statistics cache --------------------------------------------------------------------------

def cache_dir() -> Path:
    from ..runs import toolbox_home

    return toolbox_home() / "datasets"


def cache_file(ref: str) -> Path:
    return cache_dir() / f"{refs.slug(ref)}-{hashlib.sha256(ref.encode()).hexdigest()[:16]}.json"


def _fingerprint(table: ImageTable) -> str:
    return table.source.get("fingerprint") or table.source.get("commit") or ""


def cached_stats(table: ImageTable) -> dict | None:
    path = cache_file(table.ref)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("ref") != table.ref or saved.get("fingerprint") != _fingerprint(table):
        return None
    return saved


def save_stats(table: ImageTable, shape, mean, std, counts: dict) -> None:
    from ..state import atomic_write_text

    path = cache_file(table.ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"ref": table.ref, "fingerprint": _fingerprint(table), "shape": list(shape),
                                        "mean": list(mean), "std": list(std), "counts": counts,
                                        "source": table.source}, indent=2))


# --- into a DatasetSpec + tensors ------------------------------------------------------------------

def counts(table: ImageTable) -> dict:
    return {"train": int((~table.test).sum()), "test": int(table.test.sum()),
            "per_class_train": np.bincount(table.labels[~table.test], minlength=len(table.classes)).tolist()}


def memory_budget() -> int:
    """Bytes a dataset's decoded training split may take in memory before it is streamed from disk:
    ``TOOLBOX_MEMORY_BUDGET`` (bytes, or with a K/M/G suffix; 0 streams every folder or Hub dataset),
    else ``MEMORY_FRACTION`` of the memory available now."""
    text = os.environ.get("TOOLBOX_MEMORY_BUDGET", "").strip().upper()
    if text:
        scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
        number = text[:-1] if scale > 1 else text
        try:
            return int(float(number) * scale)
        except ValueError:
            raise UsageError(f"TOOLBOX_MEMORY_BUDGET={text!r} is not a size; write bytes or e.g. 512M, 4G") from None
    return int(MEMORY_FRACTION * available_memory())


MEMORY_FRACTION = 0.5


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def decoded_bytes(n: int, shape) -> int:
    """float32 bytes of ``n`` decoded images of ``shape``."""
    return 4 * n * int(np.prod(shape))


class StreamedImages:
    """A map-style dataset of the training split, decoded from disk per item: (normalised float32 [C, H, W],
    int64 label), the values the in-memory path computes (the same division by 255 and normalisation),
    so batches and losses are identical. Items draw no random numbers (see engine.LoaderBatches)."""

    streamed = True

    def __init__(self, table: ImageTable, indices: np.ndarray, shape, mean, std, labels=None):
        self.table, self.indices, self.shape = table, indices, tuple(shape)
        self.mean, self.std = tuple(mean), tuple(std)
        self.labels = table.labels[indices] if labels is None else np.asarray(labels, dtype=np.int64)

    def with_labels(self, labels) -> StreamedImages:
        """The same images with other labels (e.g. a method's label noise), one per item."""
        import torch

        values = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        if len(values) != len(self):
            raise ValueError(f"{len(values)} labels for {len(self)} streamed images")
        return StreamedImages(self.table, self.indices, self.shape, self.mean, self.std, values)

    def __len__(self) -> int:
        return len(self.indices)

    def tensor_at(self, positions):
        """The normalised images at ``positions`` (of this dataset) stacked into one tensor."""
        import torch

        return torch.stack([self[int(i)][0] for i in positions])

    def __getitem__(self, i: int):
        import torch

        from ..evaluation import normalize

        j = int(self.indices[i])
        x = np.array(decode(self.table, j, self.shape), dtype=np.float32)
        x /= np.float32(255.0)
        return normalize(torch.from_numpy(x)[None], self.mean, self.std)[0], torch.tensor(int(self.labels[i]))


def _stream_chunks(table: ImageTable, indices: np.ndarray, shape):
    for start in range(0, len(indices), STATS_CHUNK):
        part = indices[start:start + STATS_CHUNK]
        yield np.stack([decode(table, int(i), shape) for i in part])


def build(table: ImageTable):
    """(DatasetSpec, (train_x, train_y, test_x, test_y), streamed training set or None). The training split is
    decoded into memory when its decoded size fits ``memory_budget()``; otherwise train_x is None and the
    third item decodes it from disk per item (statistics then come from one streamed pass, or the cache)."""
    from ..registry import DatasetSpec
    from .readers import _tensors

    if not table.test.any():
        raise RunError(f"{table.location} has no test samples (every class has a single image, or the test split "
                       "is empty); add images or a val/ folder")
    sizes, modes = headers(table)
    shape = layout(table, sizes, modes)
    train_idx, test_idx = np.flatnonzero(~table.test), np.flatnonzero(table.test)
    budget = memory_budget()
    stream = decoded_bytes(len(train_idx), shape) > budget
    images = None if stream else decode_all(table, shape)
    stats = cached_stats(table)
    if stats and tuple(stats.get("shape", ())) == shape:
        mean, std = tuple(stats["mean"]), tuple(stats["std"])
    else:
        mean, std = channel_stats(_stream_chunks(table, train_idx, shape) if stream else images[train_idx])
        save_stats(table, shape, mean, std, counts(table))
    if stream:
        test_images = np.stack([decode(table, int(i), shape) for i in test_idx])
        arrays = _tensors(test_images[:0], table.labels[train_idx], test_images, table.labels[test_idx])
        arrays = (None, *arrays[1:])
        streamed = StreamedImages(table, train_idx, shape, mean, std)
    else:
        arrays = _tensors(images[train_idx], table.labels[train_idx], images[test_idx], table.labels[test_idx])
        streamed = None
    loading = {"train": "streamed" if stream else "memory", "decoded_train_bytes": decoded_bytes(len(train_idx), shape),
               "memory_budget": budget}
    spec = DatasetSpec(
        name=table.ref, num_classes=len(table.classes), shape=shape, mean=mean, std=std, classes=table.classes,
        load=lambda: arrays, summary=f"{table.source['kind']} {table.location}",
        location=lambda: table.location, source={**table.source, "shape": list(shape), "mean": list(mean),
                                                 "std": list(std), "loading": loading},
    )
    return spec, arrays, streamed


def describe(table: ImageTable) -> dict:
    """What `toolbox datasets REF` prints: classes, counts, image sizes, split, cache (decodes nothing)."""
    sizes, modes = headers(table)
    shape = layout(table, sizes, modes)
    size_counts = collections.Counter(f"{w}x{h}" for w, h in sizes)
    stats = cached_stats(table)
    return {"ref": table.ref, "where": table.location, "classes": list(table.classes), **counts(table),
            "image_sizes": dict(size_counts.most_common()), "shape": list(shape), "split": table.source.get("split"),
            "source": table.source, "cache": str(cache_file(table.ref)),
            "statistics": {"mean": stats["mean"], "std": stats["std"]} if stats else None}


# --- Hub parquet -----------------------------------------------------------------------------------

PARQUET_SPLITS = {"train": False, "test": True, "validation": True, "valid": True, "val": True}


def _split_of(path: str) -> str | None:
    """'data/train-00000-of-00001.parquet', 'train/0000.parquet', 'cfg/test-0.parquet' -> train/test/..."""
    parts = path.lower().split("/")
    for part in reversed(parts):
        stem = part.removesuffix(".parquet")
        for name in PARQUET_SPLITS:
            if stem == name or stem.startswith((name + "-", name + "_", name + ".")):
                return name
    return None


def _card_class_names(readme: Path) -> dict[str, list[str]]:
    """{column: class names} from a dataset card's YAML metadata (dataset_info.features[].dtype.class_label)."""
    import yaml

    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    if not text.startswith("---"):
        return {}
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}
    infos = meta.get("dataset_info") if isinstance(meta, dict) else None
    found = {}
    for info in infos if isinstance(infos, list) else [infos]:
        for feature in (info or {}).get("features") or [] if isinstance(info, dict) else []:
            label = (feature.get("dtype") or {}).get("class_label") if isinstance(feature.get("dtype"), dict) else None
            names = (label or {}).get("names") if isinstance(label, dict) else None
            if names is not None and feature.get("name"):
                found[feature["name"]] = _names_list(names)
    return found


def _names_list(names) -> list[str]:
    if isinstance(names, dict):  # {"0": "cat", "1": "dog"}
        return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
    return [str(n) for n in names]


def _features_class_names(features) -> dict[str, list[str]]:
    """From a `datasets` features mapping ({"label": {"_type": "ClassLabel", "names": [...]}})."""
    found = {}
    for name, f in (features or {}).items() if isinstance(features, dict) else []:
        if isinstance(f, dict) and f.get("names") is not None:
            found[name] = _names_list(f["names"])
    return found


def _schema_class_names(schema) -> dict[str, list[str]]:
    meta = schema.metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return {}
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    return _features_class_names((info.get("info") or {}).get("features"))


def _image_column(schema, where: str) -> str:
    import pyarrow as pa

    def encoded(t):
        return pa.types.is_binary(t) or pa.types.is_large_binary(t) or (
            pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields)))

    candidates = [f.name for f in schema if encoded(f.type)]
    for preferred in ("image", "img", "pixel_values"):
        if preferred in candidates:
            return preferred
    if candidates:
        return candidates[0]
    columns = ", ".join(f"{f.name} ({f.type})" for f in schema)
    raise RunError(f"{where} has no image column (encoded bytes, or a struct with 'bytes'); its columns: {columns}. "
                   "Store images as encoded PNG/JPEG bytes in an 'image' column")


def _label_column(schema, named: dict, where: str) -> str:
    import pyarrow as pa

    ints = [f.name for f in schema if pa.types.is_integer(f.type)]
    for preferred in (*named, "label", "labels", "fine_label", "class", "target"):
        if preferred in ints:
            return preferred
    if ints:
        return ints[0]
    raise RunError(f"{where} has no integer label column; its columns: {', '.join(f.name for f in schema)}")


def _download_hub(repo: str, revision: str | None) -> tuple[Path, str]:
    from huggingface_hub import HfApi, constants, snapshot_download

    from ..hub import _our_progress, hub_errors

    allow = ["*.parquet", "README.md", "dataset_info.json"]
    with hub_errors(repo, revision, "dataset"), _our_progress(f"fetching dataset {repo}@{revision or 'main'}"):
        if constants.HF_HUB_OFFLINE:
            path = snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=allow,
                                     local_files_only=True)
        else:
            info = HfApi().dataset_info(repo, revision=revision)
            files = [s.rfilename for s in (info.siblings or [])]
            if not any(f.endswith(".parquet") for f in files):
                raise RunError(f"dataset {repo}@{revision or 'main'} has no parquet files (it has "
                               f"{', '.join(files[:6]) or 'nothing'}); toolbox reads image datasets stored as parquet")
            # by the user's revision (not info.sha), so the cache learns the branch name for offline use; the
            # snapshot folder is named by the commit actually downloaded, which is what gets recorded
            path = snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=allow)
    return Path(path), Path(path).name


def scan_hub(ref: str) -> ImageTable:
    import pyarrow.parquet as pq

    base, options = refs.split_options(ref)
    repo, revision = refs.hub_repo(base)
    folder, commit = _download_hub(repo, revision)
    files = sorted(str(p.relative_to(folder).as_posix()) for p in folder.rglob("*.parquet"))
    split_of = {f: _split_of(f) for f in files}
    if not any(split_of.values()) or not any(s == "train" for s in split_of.values()):
        raise RunError(f"dataset {repo}@{commit[:12]}: no training split among its parquet files ({', '.join(files)}); "
                       "name them train-*.parquet and test-*.parquet (or put them in train/ and test/ folders)")
    named = _card_class_names(folder / "README.md")
    if not named and (folder / "dataset_info.json").is_file():
        try:
            named = _features_class_names(json.loads((folder / "dataset_info.json").read_text()).get("features"))
        except (ValueError, AttributeError):
            named = {}
    blobs, names, labels, test = [], [], [], []
    classes: list[str] | None = None
    for f in (f for f in files if split_of[f]):
        where = f"dataset {repo}@{commit[:12]} file {f}"
        try:
            table = pq.read_table(folder / f)
        except Exception as e:  # pyarrow's ArrowInvalid and OSError for a damaged file
            raise RunError(f"{where} is not readable parquet ({e}); delete it from the Hub cache and fetch again") from None
        schema = table.schema
        named = named or _schema_class_names(schema)
        image_col = _image_column(schema, where)
        label_col = _label_column(schema, named, where)
        if classes is None and named.get(label_col):
            classes = named[label_col]
        column = table.column(image_col).to_pylist()
        ys = table.column(label_col).to_pylist()
        for row, (cell, y) in enumerate(zip(column, ys)):
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if data is None or y is None:
                raise RunError(f"{where} row {row}: no {'image bytes' if data is None else 'label'}; "
                               "every row needs both")
            blobs.append(bytes(data))
            names.append(f"{where} row {row}")
            labels.append(int(y))
            test.append(PARQUET_SPLITS[split_of[f]])
    labels_arr = np.array(labels, dtype=np.int64)
    if classes is None:
        classes = [str(i) for i in range(int(labels_arr.max()) + 1 if len(labels_arr) else 0)]
    bad = np.flatnonzero((labels_arr < 0) | (labels_arr >= len(classes)))
    if len(bad):
        i = int(bad[0])
        raise RunError(f"{names[i]}: label {labels[i]} is outside the class list ({len(classes)} classes: "
                       f"{', '.join(classes[:5])}{'...' if len(classes) > 5 else ''}); fix the labels or the card's "
                       "class names")
    splits = sorted({split_of[f] for f in files if split_of[f]})
    source = {"kind": "hub", "repo": repo, "revision": revision, "commit": commit, "files": [f for f in files if split_of[f]],
              "split": {"kind": "files", "splits": splits}, **options}
    # the reference that checkpoints and condensed sets record names the commit, not a branch that moves
    pinned = refs.join_options(f"{refs.HUB_PREFIX}{repo}@{commit}", options)
    return ImageTable(pinned, blobs, names, labels_arr, tuple(classes), np.array(test, dtype=bool), source,
                      f"hf-hub:{repo}@{commit}", options)


_hub_tables: dict[str, ImageTable] = {}


def scan(ref: str) -> ImageTable:
    """The table a canonical folder or Hub reference names (a Hub dataset is asked for once per process)."""
    base, _ = refs.split_options(ref)
    if not base.startswith(refs.HUB_PREFIX):
        return scan_folder(ref)
    if ref not in _hub_tables:
        _hub_tables[ref] = scan_hub(ref)
    return _hub_tables[ref]
