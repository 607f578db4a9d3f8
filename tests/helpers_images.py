"""Image datasets written by tests: class folders of PNG/JPEG/WebP files and image-classification parquet."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def digits_arrays():
    """scikit-learn's digits with the built-in split, as uint8 [N, 8, 8] (values * 255 / 16, rounded)."""
    from toolbox.data import readers

    train_x, train_y, test_x, test_y = readers.load_digits()

    def u8(x):
        return np.round(x[:, 0].numpy() * 255).astype(np.uint8)

    return u8(train_x), train_y.numpy(), u8(test_x), test_y.numpy()


def write_digits_folder(root: Path) -> Path:
    """The built-in digits split as train/<class>/*.png and val/<class>/*.png."""
    from PIL import Image

    train_x, train_y, test_x, test_y = digits_arrays()
    for split, xs, ys in (("train", train_x, train_y), ("val", test_x, test_y)):
        for i, (img, label) in enumerate(zip(xs, ys)):
            folder = root / split / f"digit{int(label)}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    return root


def pattern_images(n_classes: int, per_class: int, size: int, channels: int, seed: int = 0):
    """Learnable synthetic images: class c is a noisy bright bar at a class-specific row (uint8 [N, H, W(, 3)])."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(n_classes):
        for _ in range(per_class):
            img = rng.integers(0, 60, size=(size, size, 3), dtype=np.int64)
            row = (c * size) // n_classes
            img[row:row + max(1, size // n_classes), :, c % 3] += 180
            img = np.clip(img, 0, 255).astype(np.uint8)
            images.append(img if channels == 3 else img.max(axis=2))
            labels.append(c)
    return images, np.array(labels)


def encode(img: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(img).save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def write_pattern_folder(root: Path, n_classes: int = 3, per_class: int = 20, size: int = 12, channels: int = 3,
                         formats=("PNG",), sizes=None) -> Path:
    """Class folders class0..classK of pattern images (formats cycle per image; ``sizes`` cycles image sizes)."""
    from PIL import Image

    images, labels = pattern_images(n_classes, per_class, size, channels)
    suffix = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
    for i, (img, label) in enumerate(zip(images, labels)):
        fmt = formats[i % len(formats)]
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        if sizes:
            s = sizes[i % len(sizes)]
            img = np.asarray(Image.fromarray(img).resize((s, s)))
        (folder / f"img{i:04d}.{suffix[fmt]}").write_bytes(encode(img, fmt))
    return root


def write_parquet(path: Path, images, labels, *, image_column: str = "image", label_column: str = "label",
                  class_names=None, struct: bool = True) -> Path:
    """A parquet file as the `datasets` library writes an image-classification split: an image column of
    {"bytes", "path"} structs (or plain binary) and an int64 label column; with ``class_names``, the
    features in the schema's "huggingface" metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    encoded = [encode(img) for img in images]
    if struct:
        column = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(encoded)],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    else:
        column = pa.array(encoded, type=pa.binary())
    table = pa.table({image_column: column, label_column: pa.array(np.asarray(labels, dtype=np.int64))})
    if class_names is not None:
        features = {image_column: {"_type": "Image"}, label_column: {"_type": "ClassLabel", "names": list(class_names)}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def card_with_classes(class_names, column: str = "label") -> str:
    """A dataset card whose YAML metadata lists the label column's class names, as the Hub's cards do."""
    names = "\n".join(f"            '{i}': {n}" for i, n in enumerate(class_names))
    return ("---\ndataset_info:\n  features:\n  - name: image\n    dtype: image\n"
            f"  - name: {column}\n    dtype:\n      class_label:\n        names:\n{names}\n---\n\n# a test dataset\n")
