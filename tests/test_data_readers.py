"""Dataset readers on small files written in the published formats; downloads from file:// URLs only."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers_formats import cifar_bytes, idx_bytes, write_idx_dataset, write_svhn_mat, write_tar_gz

from toolbox.data import catalog, download, readers
from toolbox.errors import DatasetMissing, RunError

torch.set_num_threads(1)


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLBOX_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TOOLBOX_NO_DOWNLOAD", "1")
    return tmp_path / "data"


def rng_images(seed, n, shape):
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def assert_pixels(x, expected_uint8):
    assert x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(expected_uint8.astype(np.float32) / 255))


def assert_labels(y, expected):
    assert y.dtype == torch.int64
    assert y.tolist() == list(expected)


# --- exact values in each format ---------------------------------------------------------------

@pytest.mark.parametrize("name,gz", [("mnist", True), ("fashion-mnist", False)])
def test_idx_files_give_the_written_pixels_and_labels(root, name, gz):
    train = rng_images(0, 5, (28, 28)), np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    test = rng_images(1, 3, (28, 28)), np.array([9, 2, 6], dtype=np.uint8)
    write_idx_dataset(root / name, train, test, gz=gz)
    spec = {s.name: s for s in catalog.datasets()}[name]
    assert spec.present() and spec.where() == str(root / name)

    train_x, train_y, test_x, test_y = spec.load_arrays()

    assert train_x.shape == (5, 1, 28, 28) and test_x.shape == (3, 1, 28, 28)
    assert_pixels(train_x, train[0][:, None])
    assert_pixels(test_x, test[0][:, None])
    assert_labels(train_y, [3, 1, 4, 1, 5])
    assert_labels(test_y, [9, 2, 6])


def cifar10_files(seed=0):
    """Five training batches of 2 records and a test batch of 3, as (images, labels) per member."""
    batches = {f"cifar-10-batches-bin/data_batch_{i}.bin": (rng_images(seed + i, 2, (3, 32, 32)),
                                                           np.array([i, 9 - i], dtype=np.uint8))
               for i in range(1, 6)}
    batches["cifar-10-batches-bin/test_batch.bin"] = (rng_images(seed + 9, 3, (3, 32, 32)),
                                                      np.array([7, 0, 3], dtype=np.uint8))
    return batches


@pytest.mark.parametrize("unpacked", [False, True])
def test_cifar10_binary_records_in_order(root, unpacked):
    batches = cifar10_files()
    members = {name: cifar_bytes(images, labels) for name, (images, labels) in batches.items()}
    if unpacked:
        for name, data in members.items():
            (root / "cifar10" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "cifar10" / name).write_bytes(data)
    else:
        write_tar_gz(root / "cifar10" / "cifar-10-binary.tar.gz", members)
    assert download.present("cifar10")

    train_x, train_y, test_x, test_y = readers.load_cifar10()

    train = [batches[f"cifar-10-batches-bin/data_batch_{i}.bin"] for i in range(1, 6)]
    assert train_x.shape == (10, 3, 32, 32)
    # record bytes: 1024 red, 1024 green, 1024 blue, each row by row -> [C, H, W]
    assert_pixels(train_x, np.concatenate([images for images, _ in train]))
    assert_labels(train_y, [1, 8, 2, 7, 3, 6, 4, 5, 5, 4])
    assert_pixels(test_x, batches["cifar-10-batches-bin/test_batch.bin"][0])
    assert_labels(test_y, [7, 0, 3])


def test_cifar100_uses_the_fine_label(root):
    train_images, test_images = rng_images(0, 4, (3, 32, 32)), rng_images(1, 2, (3, 32, 32))
    coarse, fine = np.array([19, 0, 5, 7]), np.array([99, 42, 0, 58])
    write_tar_gz(root / "cifar100" / "cifar-100-binary.tar.gz", {
        "cifar-100-binary/train.bin": cifar_bytes(train_images, coarse, fine),
        "cifar-100-binary/test.bin": cifar_bytes(test_images, [1, 2], [77, 13]),
        "cifar-100-binary/fine_label_names.txt": b"apple\n",
    })

    train_x, train_y, test_x, test_y = readers.load_cifar100()

    assert_pixels(train_x, train_images)
    assert_labels(train_y, [99, 42, 0, 58])
    assert_pixels(test_x, test_images)
    assert_labels(test_y, [77, 13])


def test_svhn_mat_layout_and_label_ten_means_zero(root):
    train_images, test_images = rng_images(0, 4, (3, 32, 32)), rng_images(1, 3, (3, 32, 32))
    write_svhn_mat(root / "svhn" / "train_32x32.mat", train_images, [10, 1, 9, 10])
    write_svhn_mat(root / "svhn" / "test_32x32.mat", test_images, [5, 10, 2])

    train_x, train_y, test_x, test_y = readers.load_svhn()

    assert train_x.shape == (4, 3, 32, 32) and train_x.is_contiguous()
    assert_pixels(train_x, train_images)
    assert_labels(train_y, [0, 1, 9, 0])
    assert_pixels(test_x, test_images)
    assert_labels(test_y, [5, 0, 2])


# --- missing and broken files ------------------------------------------------------------------

def test_missing_files_name_the_file_the_folder_and_the_source(root):
    spec = {s.name: s for s in catalog.datasets()}["cifar10"]
    assert not spec.present()
    with pytest.raises(DatasetMissing) as e:
        spec.load_arrays()
    message = str(e.value)
    assert "\n" not in message
    assert "cifar-10-binary.tar.gz" in message and str(root / "cifar10") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in message


def test_missing_idx_files_are_listed_but_present_ones_are_not(root):
    images, labels = rng_images(0, 2, (28, 28)), np.array([1, 2], dtype=np.uint8)
    write_idx_dataset(root / "mnist", (images, labels), (images, labels))
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetMissing) as e:
        readers.load_mnist()
    message = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and "train-images" not in message
    assert str(root / "mnist") in message and "ossci-datasets.s3.amazonaws.com/mnist/" in message


def _truncate(path, keep=0.6):
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def _mnist_gz(root):
    images, labels = rng_images(0, 20, (28, 28)), np.arange(20, dtype=np.uint8) % 10
    write_idx_dataset(root / "mnist", (images, labels), (images, labels))
    return readers.load_mnist, root / "mnist" / "train-images-idx3-ubyte.gz"


def _mnist_raw(root):
    images, labels = rng_images(0, 20, (28, 28)), np.arange(20, dtype=np.uint8) % 10
    write_idx_dataset(root / "mnist", (images, labels), (images, labels), gz=False)
    return readers.load_mnist, root / "mnist" / "t10k-images-idx3-ubyte"


def _cifar_archive(root):
    members = {name: cifar_bytes(images, labels) for name, (images, labels) in cifar10_files().items()}
    write_tar_gz(root / "cifar10" / "cifar-10-binary.tar.gz", members)
    return readers.load_cifar10, root / "cifar10" / "cifar-10-binary.tar.gz"


def _cifar_record(root):
    for name, (images, labels) in cifar10_files().items():
        (root / "cifar10" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "cifar10" / name).write_bytes(cifar_bytes(images, labels))
    return readers.load_cifar10, root / "cifar10" / "cifar-10-batches-bin" / "data_batch_3.bin"


def _svhn(root):
    write_svhn_mat(root / "svhn" / "train_32x32.mat", rng_images(0, 20, (3, 32, 32)), np.full(20, 3))
    write_svhn_mat(root / "svhn" / "test_32x32.mat", rng_images(1, 5, (3, 32, 32)), np.full(5, 10))
    return readers.load_svhn, root / "svhn" / "train_32x32.mat"


@pytest.mark.parametrize("make", [_mnist_gz, _mnist_raw, _cifar_archive, _cifar_record, _svhn])
@pytest.mark.parametrize("keep", [0.6, 0.02])
def test_truncated_file_is_one_line_naming_it_and_the_fix(root, make, keep):
    load, victim = make(root)
    load()  # intact files read fine
    _truncate(victim, keep)
    with pytest.raises(RunError) as e:
        load()
    message = str(e.value)
    assert "\n" not in message and str(victim) in message and "delete it" in message


def test_idx_with_wrong_magic_or_label_range_is_rejected(root):
    images, labels = rng_images(0, 2, (28, 28)), np.array([1, 2], dtype=np.uint8)
    write_idx_dataset(root / "mnist", (images, labels), (images, np.array([3, 10], dtype=np.uint8)))
    with pytest.raises(RunError, match="t10k-labels-idx1-ubyte.gz.*label 10 is out of range"):
        readers.load_mnist()
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    with pytest.raises(RunError, match="t10k-labels-idx1-ubyte.gz.*not an IDX file of 1-d"):
        readers.load_mnist()


# --- downloading -------------------------------------------------------------------------------

def test_fetch_keeps_a_file_whose_checksum_matches(tmp_path):
    source = tmp_path / "published.bin"
    source.write_bytes(b"\x00\x01" * 100_000)
    dest = tmp_path / "data" / "file.bin"
    dest.parent.mkdir()
    download.fetch(source.as_uri(), dest, hashlib.md5(source.read_bytes()).hexdigest())
    assert dest.read_bytes() == source.read_bytes()
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left behind


def test_fetch_discards_a_file_whose_checksum_differs(tmp_path):
    source = tmp_path / "published.bin"
    source.write_bytes(b"tampered")
    dest = tmp_path / "data" / "file.bin"
    dest.parent.mkdir()
    with pytest.raises(RunError) as e:
        download.fetch(source.as_uri(), dest, "0" * 32)
    assert "\n" not in str(e.value) and "checksum mismatch for file.bin" in str(e.value)
    assert list(dest.parent.iterdir()) == []


def _serve_from(monkeypatch, name, published_dir):
    """Point a dataset's sources at file:// URLs of files in published_dir, with their real MD5s."""
    remotes = tuple(
        download.Remote(r.file, (published_dir / r.file).as_uri(),
                        hashlib.md5((published_dir / r.file).read_bytes()).hexdigest(), r.unpacked)
        for r in download.SOURCES[name]
    )
    monkeypatch.setitem(download.SOURCES, name, remotes)


def test_missing_files_are_downloaded_verified_and_read(root, tmp_path, monkeypatch):
    published = tmp_path / "published"
    train = rng_images(0, 3, (28, 28)), np.array([0, 1, 2], dtype=np.uint8)
    test = rng_images(1, 2, (28, 28)), np.array([7, 8], dtype=np.uint8)
    write_idx_dataset(published, train, test)
    _serve_from(monkeypatch, "fashion-mnist", published)
    monkeypatch.delenv("TOOLBOX_NO_DOWNLOAD")

    train_x, train_y, test_x, test_y = readers.load_fashion_mnist()

    assert sorted(p.name for p in (root / "fashion-mnist").iterdir()) == sorted(download.file_names("fashion-mnist"))
    assert_pixels(train_x, train[0][:, None])
    assert_labels(test_y, [7, 8])


def test_a_bad_download_is_not_kept(root, tmp_path, monkeypatch):
    published = tmp_path / "published"
    write_svhn_mat(published / "train_32x32.mat", rng_images(0, 2, (3, 32, 32)), [1, 2])
    write_svhn_mat(published / "test_32x32.mat", rng_images(1, 2, (3, 32, 32)), [1, 2])
    _serve_from(monkeypatch, "svhn", published)
    monkeypatch.setitem(download.SOURCES, "svhn", (download.SOURCES["svhn"][0],
                                                  download.Remote("test_32x32.mat", download.SOURCES["svhn"][1].url,
                                                                  "0" * 32)))
    monkeypatch.delenv("TOOLBOX_NO_DOWNLOAD")
    with pytest.raises(RunError, match="checksum mismatch for test_32x32.mat"):
        readers.load_svhn()
    assert [p.name for p in (root / "svhn").iterdir()] == ["train_32x32.mat"]


def test_unreachable_source_raises_dataset_missing(root, monkeypatch):
    # port 1 on the loopback interface refuses connections: a network failure without a network
    monkeypatch.setitem(download.SOURCES, "cifar100", (download.Remote(
        "cifar-100-binary.tar.gz", "http://127.0.0.1:1/cifar-100-binary.tar.gz", "0" * 32),))
    monkeypatch.delenv("TOOLBOX_NO_DOWNLOAD")
    with pytest.raises(DatasetMissing) as e:
        readers.load_cifar100()
    message = str(e.value)
    assert "\n" not in message and "cifar-100-binary.tar.gz" in message and str(root / "cifar100") in message
    assert "downloading http://127.0.0.1:1/cifar-100-binary.tar.gz failed" in message
    assert list((root / "cifar100").iterdir()) == []


def test_data_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TOOLBOX_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.folder("svhn") == tmp_path / "xdg" / "toolbox" / "data" / "svhn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.data_root() == tmp_path / "home" / ".cache" / "toolbox" / "data"
    monkeypatch.setenv("TOOLBOX_DATA", str(tmp_path / "mine"))
    assert download.data_root() == tmp_path / "mine"


# --- digits and the catalog --------------------------------------------------------------------

def test_digits_split_is_fixed_stratified_and_every_fourth_per_class():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train_x, train_y, test_x, test_y = readers.load_digits()

    assert (len(train_y), len(test_y)) == (1352, 445)
    assert train_x.shape == (1352, 1, 8, 8) and train_x.dtype == torch.float32
    assert float(train_x.min()) == 0.0 and float(train_x.max()) == 1.0
    for c in range(10):
        members = np.flatnonzero(bunch.target == c)
        expected_test = members[3::4]
        expected_train = np.setdiff1d(members, expected_test)
        got_test = test_x[test_y == c].reshape(-1, 64).numpy()
        got_train = train_x[train_y == c].reshape(-1, 64).numpy()
        np.testing.assert_array_equal(got_test, (bunch.data[expected_test] / 16).astype(np.float32))
        np.testing.assert_array_equal(got_train, (bunch.data[expected_train] / 16).astype(np.float32))
    again = readers.load_digits()
    assert all(torch.equal(a, b) for a, b in zip(again, (train_x, train_y, test_x, test_y)))


def test_digits_statistics_match_the_train_split():
    train_x = readers.load_digits()[0].double()
    spec = {s.name: s for s in catalog.datasets()}["digits"]
    assert spec.mean[0] == pytest.approx(train_x.mean().item(), abs=5e-5)
    assert spec.std[0] == pytest.approx(train_x.std().item(), abs=5e-5)
    assert spec.present() and spec.where() == "embedded"


def test_catalog_entries_are_consistent():
    from toolbox.registry import resolve

    specs = {s.name: s for s in catalog.datasets()}
    assert sorted(specs) == ["cifar10", "cifar100", "digits", "fashion-mnist", "mnist", "svhn", "tiny-imagenet"]
    for spec in specs.values():
        assert callable(resolve(spec.load))
        assert len(spec.mean) == len(spec.std) == spec.shape[0]
        if spec.folder:
            assert spec.files == download.file_names(spec.name)
    assert specs["cifar100"].num_classes == 100
    assert specs["cifar10"].std == (0.2023, 0.1994, 0.2010)
    assert specs["tiny-imagenet"].num_classes == 200 and specs["tiny-imagenet"].shape == (3, 64, 64)
    assert download.SOURCES["tiny-imagenet"][0].md5 == "90528d7ca1a48142e341f4ef8d21d0de"


# --- Tiny-ImageNet: a small generated copy of the published layout ---------------------------------

def _tiny_imagenet(folder, zipped: bool):
    """200 wnids (listed unsorted, as published), two training JPEGs each (one grayscale), and a val/
    folder of 7 images labelled by val_annotations.txt; unpacked, or zipped as published."""
    import io
    import zipfile

    from PIL import Image

    rng = np.random.default_rng(0)
    wnids = [f"n{rng.integers(10**7, 10**8)}" for _ in range(200)]
    members = {"wnids.txt": "\n".join(wnids).encode() + b"\n", "words.txt": b"n0\tunused\n"}

    def jpeg(gray=False):
        img = rng.integers(0, 256, size=(64, 64) if gray else (64, 64, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(img).save(out, format="JPEG")
        return out.getvalue()

    for i, w in enumerate(wnids):
        for k in range(2):
            members[f"train/{w}/images/{w}_{k}.JPEG"] = jpeg(gray=i == 3 and k == 1)
        members[f"train/{w}/{w}_boxes.txt"] = b"0 0 63 63\n"
    val = [(f"val_{j}.JPEG", wnids[j * 13]) for j in range(7)]
    for name, _ in val:
        members[f"val/images/{name}"] = jpeg()
    members["val/val_annotations.txt"] = "".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in val).encode()
    members["test/images/test_0.JPEG"] = jpeg()  # unlabelled, never read
    folder.mkdir(parents=True)
    if zipped:
        with zipfile.ZipFile(folder / "tiny-imagenet-200.zip", "w") as z:
            for name, data in members.items():
                z.writestr(f"tiny-imagenet-200/{name}", data)
    else:
        for name, data in members.items():
            path = folder / "tiny-imagenet-200" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return wnids, val, members


@pytest.mark.parametrize("zipped", [False, True])
def test_tiny_imagenet_published_layout(root, zipped):
    import io

    from PIL import Image

    wnids, val, members = _tiny_imagenet(root / "tiny-imagenet", zipped)
    spec = {s.name: s for s in catalog.datasets()}["tiny-imagenet"]
    assert spec.present()
    train_x, train_y, test_x, test_y = spec.load_arrays()
    order = sorted(wnids)
    assert train_x.shape == (400, 3, 64, 64) and test_x.shape == (7, 3, 64, 64)
    assert_labels(train_y, [c for c in range(200) for _ in range(2)])  # class k = the k-th wnid, sorted
    assert_labels(test_y, [order.index(w) for _, w in val])
    gray = members[f"train/{wnids[3]}/images/{wnids[3]}_1.JPEG"]
    i = 2 * order.index(wnids[3]) + 1
    expected = np.asarray(Image.open(io.BytesIO(gray)).convert("RGB")).transpose(2, 0, 1)
    assert_pixels(train_x[i], expected)  # a grayscale JPEG becomes 3 equal channels
    assert torch.equal(train_x[i][0], train_x[i][1])


def test_tiny_imagenet_missing_names_the_zip_and_its_source(root):
    with pytest.raises(DatasetMissing) as e:
        readers.load_tiny_imagenet()
    assert str(e.value) == ("dataset 'tiny-imagenet' is missing tiny-imagenet-200.zip (TOOLBOX_NO_DOWNLOAD is set); "
                            f"put it in {root / 'tiny-imagenet'} (from http://cs231n.stanford.edu/tiny-imagenet-200.zip)")


def test_tiny_imagenet_truncated_zip_is_one_line(root):
    _tiny_imagenet(root / "tiny-imagenet", zipped=True)
    _truncate(root / "tiny-imagenet" / "tiny-imagenet-200.zip", keep=0.5)
    with pytest.raises(RunError, match=r"tiny-imagenet-200.zip is truncated or corrupt .*delete it and run again"):
        readers.load_tiny_imagenet()


def test_catalog_imports_neither_torch_nor_numpy():
    code = "import sys, toolbox.data.catalog; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
