import gzip
import hashlib
import shutil
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit.data import downloads as data
from vaekit.data import (
    DATASET_NAMES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, Dataset, binarize_fixed, load_dataset,
    parse_idx, read_idx,
)
from vaekit.errors import DataError

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may reach the network: only file:// URLs can be opened."""
    real_urlopen = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        assert str(url).startswith("file://"), f"test tried to open {url}"
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    """The default cache directory is an empty temporary folder."""
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mnist(shared_data) -> Dataset:
    return load_dataset("mnist", shared_data / "mnist", download=False)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file made here (independently of the parser): big-endian magic, sizes, bytes."""
    magic = 0x00000800 | array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_mnist(directory: Path, num_train: int = 20, num_test: int = 10,
                     num_train_labels: int | None = None) -> None:
    """Uncompressed IDX files (no published md5 to check) with 4x4 images."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n, n_labels in (("train", num_train, num_train_labels or num_train),
                                ("t10k", num_test, num_test)):
        images = rng.integers(0, 256, size=(n, 4, 4))
        labels = rng.integers(0, 10, size=n_labels)
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


# ------------------------------------------------------------------------------------------
# registered data sets

def test_registry_names():
    assert DATASET_NAMES == ("digits", "mnist", "fashion-mnist", "binarized-mnist", "omniglot",
                             "caltech101-silhouettes", "frey-faces", "dsprites")


def test_digits_splits_cover_all_examples_once():
    ds = load_dataset("digits")
    assert ds.data_shape == (1, 8, 8) and ds.is_image and ds.value_kind == "unit"
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert len(ds.val) == len(ds.test) == 180
    for x, y in (ds.split("train"), ds.split("val"), ds.split("test")):
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(x) == len(y)
        assert 0 <= x.min() and x.max() <= 1
    # every original image appears exactly once across the splits
    from sklearn.datasets import load_digits
    original = torch.from_numpy(load_digits().data / 16).float()
    together = torch.cat([ds.train, ds.val, ds.test]).reshape(-1, 64)
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, original.tolist()))
    assert torch.equal(torch.cat([ds.train_labels, ds.val_labels, ds.test_labels]).bincount(),
                       torch.from_numpy(load_digits().target).bincount())


def test_digits_split_depends_only_on_seed():
    a, b, c = load_dataset("digits"), load_dataset("digits"), load_dataset("digits", split_seed=1)
    assert torch.equal(a.val, b.val) and not torch.equal(a.val, c.val)


def test_split_rejects_unknown_name():
    with pytest.raises(DataError, match="train, val, test"):
        load_dataset("digits").split("valid")


def test_mnist_shapes_labels_and_pixels(mnist, shared_data):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (54000, 6000, 10000)
    assert mnist.data_shape == (1, 28, 28) and mnist.value_kind == "unit" and mnist.is_image
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.test_labels.bincount().tolist() == counts
    pixel_sum = mnist.train.sum(dtype=torch.float64) + mnist.val.sum(dtype=torch.float64)
    assert pixel_sum.item() / (60000 * 784) == pytest.approx(33.3184 / 255, abs=1e-6)
    assert mnist.train.min() == 0 and mnist.train.max() == 1
    # the 60k training file is partitioned: train and val together hold every label once
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.cat([mnist.train_labels, mnist.val_labels]).bincount().tolist() == train_counts


def test_mnist_val_fraction(shared_data):
    ds = load_dataset("mnist", shared_data / "mnist", val_fraction=0.25, download=False)
    assert (len(ds.train), len(ds.val)) == (45000, 15000)


def test_fashion_mnist_has_1000_test_images_per_class(shared_data):
    ds = load_dataset("fashion-mnist", shared_data / "fashion-mnist", download=False)
    assert ds.test_labels.bincount().tolist() == [1000] * 10
    assert ds.class_names[9] == "Ankle boot"


def test_binarized_mnist(shared_data):
    ds = load_dataset("binarized-mnist", shared_data / "binarized-mnist")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50000, 10000, 10000)
    assert ds.data_shape == (1, 28, 28) and ds.value_kind == "binary"
    assert ds.train_labels is None
    for x in (ds.train, ds.val, ds.test):
        assert torch.all((x == 0) | (x == 1))
    assert ds.train.mean().item() == pytest.approx(0.1306, abs=5e-4)


def test_binarized_mnist_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match="not downloaded automatically.*--data-dir"):
        load_dataset("binarized-mnist", tmp_path)


def test_cache_dir_comes_from_environment(tmp_path):
    assert data.cache_dir("mnist") == tmp_path / "cache" / "mnist"


# ------------------------------------------------------------------------------------------
# IDX parsing and checksums

def test_idx_round_trip():
    array = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    assert np.array_equal(parse_idx(idx_bytes(array), "x", IDX_IMAGES_MAGIC), array)


def test_idx_wrong_magic():
    labels = idx_bytes(np.arange(10))
    with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803"):
        parse_idx(labels, "x", IDX_IMAGES_MAGIC)
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x1f\x8b\x08\x00" + bytes(20), "x")


def test_idx_header_payload_mismatch():
    good = idx_bytes(np.zeros((3, 4, 4)))
    with pytest.raises(DataError, match="says 3x4x4 = 48 values but the file holds 47"):
        parse_idx(good[:-1], "x", IDX_IMAGES_MAGIC)
    with pytest.raises(DataError, match="holds 49"):
        parse_idx(good + b"\0", "x", IDX_IMAGES_MAGIC)
    with pytest.raises(DataError, match="truncated IDX header"):
        parse_idx(good[:9], "x", IDX_IMAGES_MAGIC)


def test_read_idx_truncated_gz(tmp_path, shared_data):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes((shared_data / "mnist" / path.name).read_bytes()[:1000])
    with pytest.raises(DataError, match="not a gzip file or truncated"):
        read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a gzip file"):
        read_idx(path)


def test_md5_mismatch_names_file_and_both_checksums(tmp_path, shared_data):
    for name in MNIST_FILES:
        shutil.copy(shared_data / "mnist" / name, tmp_path / name)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    corrupt = bytearray(path.read_bytes())
    corrupt[2000] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    actual = hashlib.md5(bytes(corrupt)).hexdigest()
    with pytest.raises(DataError, match=f"t10k-labels-idx1-ubyte.gz: md5 {actual} but the "
                                        "published md5 is ec29112dd5afa0611ce80d1b7f02629c"):
        load_dataset("mnist", tmp_path, download=False)


def test_uncompressed_idx_files_are_accepted(tmp_path):
    write_fake_mnist(tmp_path, num_train=20, num_test=10)
    ds = load_dataset("mnist", tmp_path, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 2, 10)
    assert ds.data_shape == (1, 4, 4)


def test_label_and_image_counts_must_match(tmp_path):
    write_fake_mnist(tmp_path, num_train=20, num_train_labels=19)
    with pytest.raises(DataError, match="holds 20 images but .* holds 19 labels"):
        load_dataset("mnist", tmp_path, download=False)


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DataError, match=f"not found in {tmp_path}.*--data-dir"):
        load_dataset("mnist", tmp_path, download=False)


# ------------------------------------------------------------------------------------------
# downloading, served from local files

def file_url(directory: Path) -> str:
    return directory.resolve().as_uri() + "/"


def test_download_into_empty_cache(monkeypatch, tmp_path, shared_data):
    source = data.IDX_SOURCES["mnist"]
    monkeypatch.setitem(data.IDX_SOURCES, "mnist", data.IdxSource(
        (file_url(tmp_path / "nowhere"), file_url(shared_data / "mnist")), source.md5,
        source.class_names))
    ds = load_dataset("mnist")
    cache = tmp_path / "cache" / "mnist"
    for name in MNIST_FILES:
        assert (cache / name).read_bytes() == (shared_data / "mnist" / name).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == sorted(MNIST_FILES)  # no temp files left
    assert len(ds.test) == 10000


def test_download_rejects_corrupt_mirror_and_uses_the_next(monkeypatch, tmp_path, shared_data):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in MNIST_FILES:
        (bad / name).write_bytes(b"corrupt" + (shared_data / "mnist" / name).read_bytes()[7:])
    requested = []
    real_open = data._open_url
    monkeypatch.setattr(data, "_open_url", lambda url: requested.append(url) or real_open(url))
    source = data.IDX_SOURCES["mnist"]
    monkeypatch.setitem(data.IDX_SOURCES, "mnist", data.IdxSource(
        (file_url(bad), file_url(shared_data / "mnist")), source.md5, source.class_names))
    target = tmp_path / "target"
    load_dataset("mnist", target)
    assert len(requested) == 8  # every file tried on the corrupt mirror first
    for name in MNIST_FILES:
        assert (target / name).read_bytes() == (shared_data / "mnist" / name).read_bytes()


def test_download_all_mirrors_failing(monkeypatch, tmp_path):
    source = data.IDX_SOURCES["fashion-mnist"]
    monkeypatch.setitem(data.IDX_SOURCES, "fashion-mnist", data.IdxSource(
        (file_url(tmp_path / "a"), file_url(tmp_path / "b")), source.md5, source.class_names))
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert "\n" not in message
    assert "t10k-labels-idx1-ubyte.gz" in message and "--data-dir" in message
    assert str(tmp_path / "cache" / "fashion-mnist") in message
    assert list((tmp_path / "cache" / "fashion-mnist").iterdir()) == []


# ------------------------------------------------------------------------------------------
# user data

def test_npy_grey_images_uint8(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(50, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(str(tmp_path / "x.npy"))
    assert ds.data_shape == (1, 6, 5) and ds.is_image and ds.value_kind == "unit"
    assert (len(ds.train), len(ds.val), len(ds.test)) == (40, 5, 5)
    together = torch.cat([ds.train, ds.val, ds.test])
    assert torch.allclose(torch.sort(together.flatten())[0],
                          torch.sort(torch.from_numpy(x / 255).float().flatten())[0])
    assert ds.train_labels is None and ds.name == "x.npy"


def test_npy_tabular_real_and_binary(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 4))
    np.save(tmp_path / "real.npy", x)
    ds = load_dataset(str(tmp_path / "real.npy"))
    assert ds.data_shape == (4,) and not ds.is_image and ds.value_kind == "real"
    assert ds.train.dtype == torch.float32
    np.save(tmp_path / "bool.npy", x > 0)
    assert load_dataset(str(tmp_path / "bool.npy")).value_kind == "binary"
    np.save(tmp_path / "bits.npy", (x > 0).astype(np.uint8))  # uint8 0/1: not divided by 255
    bits = load_dataset(str(tmp_path / "bits.npy"))
    assert bits.value_kind == "binary" and bits.train.max() == 1


def test_npy_nhwc_rgb_is_transposed(tmp_path):
    x = np.random.default_rng(0).random((10, 8, 6, 3)).astype(np.float32)
    np.save(tmp_path / "rgb.npy", x)
    ds = load_dataset(str(tmp_path / "rgb.npy"))
    assert ds.data_shape == (3, 8, 6) and ds.value_kind == "unit"
    together = torch.cat([ds.train, ds.val, ds.test])
    expected = torch.from_numpy(x.transpose(0, 3, 1, 2))
    assert all(any(torch.equal(row, e) for e in expected) for row in together)


def test_npz_with_splits_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    train, test, val = rng.random((20, 3)), rng.random((7, 3)), rng.random((5, 3))
    np.savez(tmp_path / "d.npz", train=train, test=test, valid=val,
             train_labels=np.arange(20) % 3, test_labels=np.arange(7) % 3,
             valid_labels=np.zeros(5, dtype=np.int32))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert np.allclose(ds.train.numpy(), train) and np.allclose(ds.test.numpy(), test)
    assert np.allclose(ds.val.numpy(), val)
    assert ds.train_labels.tolist() == (np.arange(20) % 3).tolist()
    assert ds.val_labels.dtype == torch.int64


def test_npz_train_test_without_val_splits_train(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", train=rng.random((100, 2)), test=rng.random((9, 2)),
             train_labels=np.arange(100))
    ds = load_dataset(str(tmp_path / "d.npz"), val_fraction=0.2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (80, 20, 9)
    assert ds.test_labels is None
    assert sorted(torch.cat([ds.train_labels, ds.val_labels]).tolist()) == list(range(100))


def test_npz_single_array_and_xy(tmp_path):
    x = np.random.default_rng(0).random((30, 5))
    np.savez(tmp_path / "one.npz", anything=x)
    assert load_dataset(str(tmp_path / "one.npz")).data_shape == (5,)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(30))
    ds = load_dataset(str(tmp_path / "xy.npz"))
    for split in ("train", "val", "test"):  # labels follow their examples through the split
        xs, ys = ds.split(split)
        assert np.allclose(xs.numpy(), x[ys.numpy()])
    np.savez(tmp_path / "many.npz", a=x, b=x)
    with pytest.raises(DataError, match="found: a, b"):
        load_dataset(str(tmp_path / "many.npz"))


def test_csv_with_header_and_label_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,Label,b\n" + "".join(f"{i},{i % 2},{i / 10}\n" for i in range(40)))
    ds = load_dataset(str(path))
    assert ds.data_shape == (2,) and not ds.is_image and ds.value_kind == "real"
    for split in ("train", "val", "test"):
        xs, ys = ds.split(split)
        assert torch.equal(ys, xs[:, 0].long() % 2)
        assert torch.allclose(xs[:, 1], xs[:, 0] / 10)


def test_csv_without_header(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("".join(f"0.{i % 10},1\n" for i in range(20)))
    ds = load_dataset(str(path))
    assert len(ds.train) + len(ds.val) + len(ds.test) == 20
    assert ds.value_kind == "unit" and ds.train_labels is None


def test_csv_non_numeric_cell_names_row_and_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match="row 3, column 'b': 'oops' is not a number"):
        load_dataset(str(path))


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)


def test_image_folder_with_classes(tmp_path):
    rng = np.random.default_rng(0)
    images = {}
    for label, name in enumerate(["cat", "dog"]):
        for i in range(5):
            array = rng.integers(0, 256, size=(7, 9), dtype=np.uint8)
            images[(label, array.tobytes())] = array
            save_png(tmp_path / "pets" / name / f"{i}.png", array)
    ds = load_dataset(str(tmp_path / "pets"))
    assert ds.class_names == ("cat", "dog") and ds.data_shape == (1, 7, 9)
    assert ds.value_kind == "unit" and ds.is_image
    for split in ("train", "val", "test"):
        xs, ys = ds.split(split)
        for x, y in zip(xs, ys):
            pixels = (x[0] * 255).round().numpy().astype(np.uint8)
            assert (int(y), pixels.tobytes()) in images


def test_image_folder_rgb_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        save_png(tmp_path / "f" / f"{i}.png", rng.integers(0, 256, (5, 5, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(tmp_path / "f" / "j.jpg")
    ds = load_dataset(str(tmp_path / "f"))
    assert ds.data_shape == (3, 5, 5) and ds.train_labels is None and ds.class_names is None


def test_image_folder_binary_values(tmp_path):
    for i in range(3):
        save_png(tmp_path / "b" / f"{i}.png", np.eye(4, dtype=np.uint8) * 255)
    assert load_dataset(str(tmp_path / "b")).value_kind == "binary"


def test_image_folder_mismatched_sizes(tmp_path):
    save_png(tmp_path / "f" / "a.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "f" / "b.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match="b.png: 5x4 greyscale, but a.png is 4x4 greyscale"):
        load_dataset(str(tmp_path / "f"))
    save_png(tmp_path / "g" / "a.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "g" / "b.png", np.zeros((4, 4), np.uint8), "RGB")
    with pytest.raises(DataError, match="RGB"):
        load_dataset(str(tmp_path / "g"))


def test_corrupt_image(tmp_path):
    save_png(tmp_path / "f" / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "f" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="b.png: not a readable image"):
        load_dataset(str(tmp_path / "f"))


# ------------------------------------------------------------------------------------------
# bad input

def test_unknown_name_lists_valid_names():
    with pytest.raises(DataError, match="digits, mnist, fashion-mnist, binarized-mnist.*\\.npy"):
        load_dataset("cifar")


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(str(tmp_path / "nope.npy"))


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match="no .* images"):
        load_dataset(str(tmp_path))


def test_unsupported_extension(tmp_path):
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(DataError, match="unsupported file type '.txt'; use .npy, .npz, .csv"):
        load_dataset(str(tmp_path / "x.txt"))


def test_nan_is_refused(tmp_path):
    x = np.ones((20, 3))
    x[[1, 4], 2] = np.nan
    x[5, 0] = np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match="x.npy contains 3 NaN/inf values; clean or impute"):
        load_dataset(str(tmp_path / "x.npy"))


def test_empty_array_and_too_few_examples(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match="empty"):
        load_dataset(str(tmp_path / "e.npy"))
    np.save(tmp_path / "two.npy", np.zeros((2, 3)))
    with pytest.raises(DataError, match="2 examples; at least 3"):
        load_dataset(str(tmp_path / "two.npy"))
    np.save(tmp_path / "three.npy", np.zeros((3, 3)))
    ds = load_dataset(str(tmp_path / "three.npy"))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1, 1, 1)


def test_label_count_mismatch(tmp_path):
    np.savez(tmp_path / "xy.npz", x=np.zeros((10, 2)), y=np.zeros(9, dtype=int))
    with pytest.raises(DataError, match="9 labels for 10 examples"):
        load_dataset(str(tmp_path / "xy.npz"))


def test_corrupt_npz(tmp_path):
    (tmp_path / "r.npz").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(DataError, match="r.npz: not a readable .npz"):
        load_dataset(str(tmp_path / "r.npz"))


class Boom:
    """Unpickling this fails the test: proof that a loader executed a pickle."""

    def __reduce__(self):
        return (pytest.fail, ("the pickle was executed",))


def test_pickled_objects_are_refused_not_executed(tmp_path):
    np.savez(tmp_path / "p.npz", train=np.array([Boom(), Boom()], dtype=object))
    np.save(tmp_path / "p.npy", np.array([Boom()], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="p.npz: not a readable .npz.*no Python objects"):
        load_dataset(str(tmp_path / "p.npz"))
    with pytest.raises(DataError, match="p.npy: not a readable .npy"):
        load_dataset(str(tmp_path / "p.npy"))


def test_val_fraction_out_of_range():
    with pytest.raises(DataError, match="val_fraction"):
        load_dataset("digits", val_fraction=0.5)


# ------------------------------------------------------------------------------------------
# binarize_fixed

def test_binarize_fixed():
    x = torch.rand(2000, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b, c = binarize_fixed(x, 7), binarize_fixed(x, 7), binarize_fixed(x, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == x.dtype and a.shape == x.shape
    assert torch.all((a == 0) | (a == 1))
    # mean of 128000 Bernoulli draws: standard error below 0.0015
    assert a.mean().item() == pytest.approx(x.mean().item(), abs=0.006)
    assert torch.all(binarize_fixed(torch.zeros(10), 0) == 0)
    assert torch.all(binarize_fixed(torch.ones(10), 0) == 1)


# ------------------------------------------------------------------------------------------
# property: arbitrary bytes never escape as anything but DataError

IDX_STEMS = data.IDX_FILES.values()


def load_or_data_error(source: str, data_dir: Path | None = None) -> None:
    try:
        result = load_dataset(source, data_dir, download=False)
    except DataError as error:
        assert "\n" not in str(error)
    else:
        assert isinstance(result, Dataset)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300), extension=st.sampled_from([".npy", ".npz", ".csv", ".png"]))
def test_random_bytes_never_crash(tmp_path, payload, extension):
    path = tmp_path / f"random{extension}"
    path.write_bytes(payload)
    if extension == ".png":
        folder = tmp_path / "images"
        folder.mkdir(exist_ok=True)
        path = path.rename(folder / path.name)
        load_or_data_error(str(folder))
    else:
        load_or_data_error(str(path))


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=300), stem=st.sampled_from(list(IDX_STEMS)),
       compress=st.booleans())
def test_random_idx_files_never_crash(tmp_path, payload, stem, compress):
    directory = tmp_path / "fake"
    write_fake_mnist(directory)
    (directory / stem).write_bytes(payload)  # uncompressed: no md5 to check, the parser sees it
    load_or_data_error("mnist", directory)
    gz = tmp_path / f"{stem}.gz"
    gz.write_bytes(gzip.compress(payload) if compress else payload)
    try:
        read_idx(gz, IDX_LABELS_MAGIC if "labels" in stem else IDX_IMAGES_MAGIC)
    except DataError as error:
        assert "\n" not in str(error)
    load_or_data_error("mnist", tmp_path)  # a .gz that fails its md5 check


@settings(max_examples=50, deadline=None)
@given(dims=st.lists(st.integers(0, 6), min_size=0, max_size=4), extra=st.integers(-3, 3),
       magic_type=st.sampled_from([0x08, 0x09, 0x0D]))
def test_random_idx_headers_never_crash(dims, extra, magic_type):
    header = struct.pack(">I", (magic_type << 8) | len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    payload = bytes(max(0, int(np.prod(dims)) + extra))
    try:
        array = parse_idx(header + payload, "x")
    except DataError:
        return
    assert array.shape == tuple(dims) and magic_type == 0x08 and extra == 0


# -- quantized grey levels for discrete likelihoods --------------------------------------------

def test_quantize_keeps_the_levels_of_the_data_and_takes_the_top_bits():
    from vaekit.data import quantize

    levels = torch.arange(256, dtype=torch.float64)
    x = (levels / 255).float()  # 8-bit grey values as a loader gives them
    assert quantize(x, 256, 256).dtype == torch.uint8
    assert torch.equal(quantize(x, 256, 256), levels.to(torch.uint8))
    for bits in range(1, 9):
        assert torch.equal(quantize(x, 2**bits, 256), (levels.long() >> (8 - bits)).to(torch.uint8))
    digits = torch.arange(17, dtype=torch.float32) / 16
    assert torch.equal(quantize(digits, 17, 17), torch.arange(17, dtype=torch.uint8))
    # levels not known: floor(x n), the top value in the top bin
    assert quantize(torch.tensor([0.0, 0.249, 0.25, 0.999, 1.0]), 4).tolist() == [0, 0, 1, 3, 3]
    with pytest.raises(DataError, match="256"):
        quantize(x, 512, 256)


def test_a_discrete_likelihood_sees_uint8_levels_in_every_split():
    from vaekit.data import load_dataset, prepare_data

    dataset = load_dataset("digits")
    assert dataset.levels == 17
    prepared = prepare_data(dataset, "none", 0, lambda x: None, levels=17)
    for split in (prepared.train, prepared.val, prepared.test):
        assert split.dtype == torch.uint8 and int(split.max()) == 16
    torch.testing.assert_close(prepared.test.float() / 16, dataset.test)
    assert not prepared.dynamic_binarize


def test_mnist_and_fashion_mnist_know_their_256_levels(shared_data):
    from vaekit.data import load_dataset

    for name in ("mnist", "fashion-mnist"):
        assert load_dataset(name, shared_data / name).levels == 256
