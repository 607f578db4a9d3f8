"""Writers of small files in the datasets' published formats, for tests that must not download.

Each writer lays bytes out the way the publishers do (IDX headers, CIFAR binary records inside the
release's tar.gz, SVHN's H x W x C x N MATLAB arrays), so the readers are tested on the real layout.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (unsigned byte), the number of dimensions, big-endian sizes."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_dataset(folder: Path, train: tuple, test: tuple, gz: bool = True) -> None:
    """train/test: (images uint8 [N, 28, 28], labels uint8 [N]) written under the MNIST file names."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            raw = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)


def cifar_bytes(images: np.ndarray, *label_columns: np.ndarray) -> bytes:
    """Binary CIFAR records: the label byte(s) then 3072 pixel bytes (1024 red, 1024 green, 1024 blue)."""
    n = len(images)
    labels = np.stack([np.asarray(c, dtype=np.uint8) for c in label_columns], axis=1)
    return np.concatenate([labels, np.asarray(images, dtype=np.uint8).reshape(n, -1)], axis=1).tobytes()


def write_tar_gz(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_svhn_mat(path: Path, images_nchw: np.ndarray, labels_1_to_10: np.ndarray) -> None:
    """SVHN's published layout: X uint8 H x W x C x N, y uint8 N x 1 with 10 standing for the digit 0."""
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.ascontiguousarray(np.asarray(images_nchw, dtype=np.uint8).transpose(2, 3, 1, 0))
    y = np.asarray(labels_1_to_10, dtype=np.uint8).reshape(-1, 1)
    scipy.io.savemat(path, {"X": x, "y": y})
