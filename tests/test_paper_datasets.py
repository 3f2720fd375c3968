"""The IWAE / VampPrior benchmark data sets (vaekit.data.paper_sets): Omniglot made 28x28 by
area averaging, Caltech 101 Silhouettes and the Frey faces, from small files built here and, when
they are beside the checkout, from the real ones."""

import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.cli import main
from vaekit.config import RunConfig, merge, resolve
from vaekit.data import DATASET_NAMES, dataset_defaults, load_dataset, prepare_data
from vaekit.data.paper_sets import (CALTECH_FILE, FREY_FILE, OMNIGLOT_FILES, area_downsample,
                                    omniglot_split, overlap_matrix)
from vaekit.errors import DataError


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "cache"))


def test_the_registry_has_the_paper_data_sets():
    assert {"omniglot", "caltech101-silhouettes", "frey-faces"} <= set(DATASET_NAMES)


# ------------------------------------------------------------------------------------------
# area-averaging downsampling

def test_overlap_matrix_rows_are_averages_over_fractional_overlaps():
    a = overlap_matrix(105, 28)
    assert a.shape == (28, 105)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.sum(axis=0), 28 / 105, rtol=0, atol=1e-12)
    # output pixel 0 covers input [0, 3.75), pixel 1 covers [3.75, 7.5)
    np.testing.assert_allclose(a[0, :5], np.array([1, 1, 1, 0.75, 0]) / 3.75)
    np.testing.assert_allclose(a[1, 3:9], np.array([0.25, 1, 1, 1, 0.5, 0]) / 3.75)
    np.testing.assert_allclose(overlap_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])


def test_all_ink_gives_all_ones_and_blank_gives_zeros():
    background = np.ones((2, 105, 105), dtype=bool)  # True = background, as Omniglot's files
    background[1] = False
    ink = area_downsample(background, 28, complement=True)
    assert ink.dtype == np.float32 and ink.shape == (2, 28, 28)
    assert np.all(ink[0] == 0) and np.all(ink[1] == 1)
    assert np.all(area_downsample(np.ones((1, 105, 105)), 28) == 1)


def test_block_patterns_give_known_averages():
    x = np.zeros((3, 105, 105), dtype=np.float32)
    x[0, :15, :15] = 1  # 15 = 4 output pixels of 3.75: exactly the top-left 4x4 block
    x[1, :, 3] = 1  # input column 3 lies 0.75 in output column 0 and 0.25 in column 1
    x[2, 3, 3] = 1  # one pixel: 0.75^2, 0.75*0.25 and 0.25^2 of it, over 3.75^2
    out = area_downsample(x, 28)
    expected = np.zeros((28, 28), np.float32)
    expected[:4, :4] = 1
    np.testing.assert_array_equal(out[0], expected)
    assert np.allclose(out[1][:, 0], 0.75 / 3.75) and np.allclose(out[1][:, 1], 0.25 / 3.75)
    assert np.all(out[1][:, 2:] == 0)
    corner = np.array([[0.75 * 0.75, 0.75 * 0.25], [0.25 * 0.75, 0.25 * 0.25]]) / 3.75**2
    np.testing.assert_allclose(out[2][:2, :2], corner, rtol=1e-6)
    assert out[2].sum() == pytest.approx(1 / 3.75**2)


def test_downsampling_conserves_the_mean_and_gives_levels_of_1_over_225():
    rng = np.random.default_rng(0)
    images = rng.random((50, 105, 105)) < rng.random((50, 1, 1))
    ink = area_downsample(images, 28, complement=True, chunk=7)  # chunks of uneven size
    np.testing.assert_allclose(ink.mean(axis=(1, 2)), (~images).mean(axis=(1, 2)), rtol=0,
                               atol=1e-6)
    k = ink.astype(np.float64) * 225
    np.testing.assert_allclose(k, np.round(k), rtol=0, atol=1e-4)
    grey = rng.random((4, 105, 105))
    np.testing.assert_allclose(area_downsample(grey, 28).mean(axis=(1, 2)),
                               grey.mean(axis=(1, 2)), rtol=1e-5)


# ------------------------------------------------------------------------------------------
# Omniglot

def write_omniglot(directory, num_background=2, num_evaluation=1, tsv=None, seed=0):
    """Random 105x105 bool images (True = background) of a few characters, 20 drawers each;
    alphabets A (the background characters) and C (the evaluation ones)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for part, count in (("background", num_background), ("evaluation", num_evaluation)):
        images = rng.random((count, 20, 105, 105)) > 0.1
        labels = np.repeat(np.arange(count)[:, None], 20, axis=1)
        np.savez_compressed(directory / OMNIGLOT_FILES[part].name, images=images, labels=labels)
    total = num_background + num_evaluation
    if tsv is None:
        tsv = ("first_char_id\tlast_char_id\tset\talphabet\n"
               f"1\t{num_background}\tbackground\tAlpha_(one)\n"
               f"{num_background + 1}\t{total}\tevaluation\tC\n")
    (directory / "alphabets.tsv").write_text(tsv)


def test_omniglot_from_small_files(tmp_path):
    write_omniglot(tmp_path)
    ds = load_dataset("omniglot", tmp_path, val_fraction=0.1, split_seed=0)
    assert ds.data_shape == (1, 28, 28) and ds.value_kind == "unit" and ds.levels == 226
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (3 * 15, 3 * 5)
    assert len(ds.val) == 4  # val_fraction of the 45 training images
    assert ds.class_names == ("Alpha (one)", "C")
    for split in ("train", "val", "test"):
        x, y = ds.split(split)
        assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
        assert set(y.tolist()) <= {0, 1}
    assert int((ds.test_labels == 1).sum()) == 5  # the one evaluation character
    # the test images are the downsampled ink of the file's images, in file order
    with np.load(tmp_path / "images_evaluation.npz") as archive:
        last = archive["images"][0]
    _, test = omniglot_split(3)
    drawers = test[test >= 40] - 40
    expected = area_downsample(last[drawers], 28, complement=True)
    np.testing.assert_array_equal(ds.test[ds.test_labels == 1][:, 0].numpy(), expected)


def test_omniglot_test_split_is_fixed_and_split_seed_draws_validation(tmp_path):
    write_omniglot(tmp_path)
    a = load_dataset("omniglot", tmp_path, split_seed=0)
    b = load_dataset("omniglot", tmp_path, split_seed=1)
    assert torch.equal(a.test, b.test)
    torch.testing.assert_close(torch.cat([a.train, a.val]).double().sum(0),  # the same images
                               torch.cat([b.train, b.val]).double().sum(0))
    assert not torch.equal(a.val, b.val)


def test_omniglot_split_has_the_papers_sizes():
    train, test = omniglot_split(1623)
    assert (len(train), len(test)) == (24345, 8070)
    assert len(np.intersect1d(train, test)) == 0 and len(np.unique(train)) == len(train)
    per_character = np.bincount(train // 20, minlength=1623)
    assert np.all(per_character == 15)
    assert np.all(np.bincount(test // 20, minlength=1623) <= 5)
    again = omniglot_split(1623)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])


@pytest.mark.parametrize("change,needle", [
    (lambda d: (d / "images_background.npz").unlink(), "images_background.npz not found in"),
    (lambda d: np.savez(d / "images_evaluation.npz", pictures=np.zeros(3)),
     "has no array 'images' (found: pictures)"),
    (lambda d: np.savez(d / "images_evaluation.npz", images=np.ones((1, 20, 28, 28), bool)),
     "shape (1, 20, 28, 28)"),
    (lambda d: np.savez(d / "images_evaluation.npz", images=np.ones((1, 20, 105, 105), np.uint8)),
     "dtype uint8"),
    (lambda d: (d / "images_background.npz").write_bytes(
        (d / "images_background.npz").read_bytes()[:5000]), "not a readable .npz archive"),
    (lambda d: (d / "alphabets.tsv").write_text("first_char_id\tlast_char_id\tset\talphabet\n"
                                                "1\t2\tbackground\tA\n"), "covers characters 1..2"),
    (lambda d: (d / "alphabets.tsv").write_text("id\tname\n"), "lacks the header"),
    (lambda d: (d / "alphabets.tsv").write_text("first_char_id\tlast_char_id\tset\talphabet\n"
                                                "1\t3\tbackground\tA\n"), "line 2"),
])
def test_omniglot_bad_files_fail_with_one_line(tmp_path, change, needle):
    write_omniglot(tmp_path)
    change(tmp_path)
    with pytest.raises(DataError, match=None) as error:
        load_dataset("omniglot", tmp_path)
    message = str(error.value)
    assert needle in message and "\n" not in message


@pytest.mark.parametrize("known,name", [(OMNIGLOT_FILES["background"], "omniglot"),
                                        (CALTECH_FILE, "caltech101-silhouettes"),
                                        (FREY_FILE, "frey-faces")])
def test_a_file_of_the_official_size_must_have_the_official_md5(tmp_path, known, name):
    write_omniglot(tmp_path)
    (tmp_path / known.name).write_bytes(bytes(known.size))
    with pytest.raises(DataError, match=f"md5 .* but the official {known.name} has "
                                        f"{known.size} bytes, md5 {known.md5}"):
        load_dataset(name, tmp_path)


def test_missing_data_is_exit_status_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "omniglot", "--data-dir", str(tmp_path / "none"),
                 "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images_background.npz not found" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# Caltech 101 Silhouettes

def write_caltech(directory, sizes=(6, 3, 4), names=("Faces 2", "ant", "yin yang"), **override):
    """A .mat of the official layout: rows of 784 column-major pixels, 1 = background."""
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    contents = {}
    for split, n in zip(("train", "val", "test"), sizes):
        x = np.ones((n, 784), np.uint8)
        x[:, rng.integers(0, 784, size=20)] = 0
        contents[f"{split}_data"] = x
        contents[f"{split}_labels"] = rng.integers(1, len(names) + 1, size=(n, 1)).astype(np.uint8)
    contents["train_data"][0] = 1
    contents["train_data"][0, 5 * 28] = 0  # column-major: row 0, column 5 of the image
    contents["train_labels"][0] = len(names)
    cells = np.empty((1, len(names)), dtype=object)
    cells[0, :] = list(names)
    contents["classnames"] = cells
    contents.update(override)
    savemat(directory / CALTECH_FILE.name, contents)
    return contents


def test_caltech_from_a_small_file(tmp_path):
    contents = write_caltech(tmp_path)
    ds = load_dataset("caltech101-silhouettes", tmp_path, val_fraction=0.3, split_seed=5)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 3, 4)  # the file's own split
    assert ds.value_kind == "binary" and ds.levels == 2 and ds.data_shape == (1, 28, 28)
    assert ds.class_names == ("Faces 2", "ant", "yin yang")
    first = ds.train[0, 0]
    assert first[0, 5] == 1 and float(first.sum()) == 1  # the silhouette is 1, upright
    assert ds.train_labels[0] == 2  # 1-based in the file
    for split in ("train", "val", "test"):
        x, y = ds.split(split)
        raw = contents[f"{split}_data"].reshape(-1, 28, 28).transpose(0, 2, 1)
        np.testing.assert_array_equal(x[:, 0].numpy(), 1 - raw)
        np.testing.assert_array_equal(y.numpy(), contents[f"{split}_labels"][:, 0] - 1)


@pytest.mark.parametrize("override,needle", [
    ({"val_data": np.ones((3, 700), np.uint8)}, "val_data (3, 700)"),
    ({"test_data": np.full((4, 784), 2, np.uint8)}, "values other than 0 and 1"),
    ({"train_labels": np.full((6, 1), 4, np.uint8)}, "train_labels outside 1..3"),
    ({"classnames": np.array([[1.0, 2.0, 3.0]])}, "classnames"),
])
def test_caltech_bad_contents(tmp_path, override, needle):
    write_caltech(tmp_path, **override)
    with pytest.raises(DataError) as error:
        load_dataset("caltech101-silhouettes", tmp_path)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_caltech_not_a_mat_file_or_missing_variable(tmp_path):
    from scipy.io import savemat

    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / CALTECH_FILE.name
    path.write_bytes(b"hello world" * 40)
    with pytest.raises(DataError, match="not a readable MATLAB file"):
        load_dataset("caltech101-silhouettes", tmp_path)
    savemat(path, {"train_data": np.ones((2, 784), np.uint8)})
    with pytest.raises(DataError, match="has no variable 'train_labels'"):
        load_dataset("caltech101-silhouettes", tmp_path)


# ------------------------------------------------------------------------------------------
# Frey faces

def write_frey(directory, n=40, **arrays):
    directory.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(2).integers(0, 256, size=(n, 28, 20), dtype=np.uint8)
    np.savez(directory / FREY_FILE.name, **(arrays or {"images": images}))
    return images


def test_frey_faces_fixed_split(tmp_path):
    images = write_frey(tmp_path)
    a = load_dataset("frey-faces", tmp_path, split_seed=0, val_fraction=0.1)
    b = load_dataset("frey-faces", tmp_path, split_seed=3, val_fraction=0.3)
    assert (len(a.train), len(a.val), len(a.test)) == (32, 4, 4)  # 200 / 1965 of 40
    for split in ("train", "val", "test"):
        assert torch.equal(a.split(split)[0], b.split(split)[0])
    assert a.data_shape == (1, 28, 20) and a.value_kind == "unit" and a.levels == 256
    assert a.train_labels is None
    every = torch.cat([a.train, a.val, a.test])[:, 0] * 255
    assert sorted(map(bytes, every.round().byte().numpy())) == sorted(map(bytes, images))


@pytest.mark.parametrize("arrays,needle", [
    ({"faces": np.zeros((5, 28, 20), np.uint8)}, "has no array 'images' (found: faces)"),
    ({"images": np.zeros((5, 20, 28), np.uint8)}, "shape (5, 20, 28)"),
    ({"images": np.zeros((5, 28, 20), np.float32)}, "dtype float32"),
])
def test_frey_bad_files(tmp_path, arrays, needle):
    write_frey(tmp_path, **arrays)
    with pytest.raises(DataError) as error:
        load_dataset("frey-faces", tmp_path)
    assert needle in str(error.value)


def test_frey_defaults_to_a_discrete_likelihood_and_takes_a_gaussian():
    config = resolve(RunConfig(), defaults=dataset_defaults("frey-faces"), value_kind="unit",
                     levels=256)
    assert config.model.likelihood == "discretized-logistic" and config.model.levels == 256
    assert config.data.binarize == "none"
    gaussian = resolve(merge(RunConfig(), {"model": {"likelihood": "gaussian"},
                                           "data": {"binarize": "none"}}),
                       defaults=dataset_defaults("frey-faces"), value_kind="unit", levels=256)
    assert gaussian.model.likelihood == "gaussian" and gaussian.model.levels is None


@pytest.mark.parametrize("extra", [[], ["--likelihood", "gaussian", "--binarize", "none"]])
def test_frey_trains_one_epoch_and_draws_28x20_samples(tmp_path, extra, capsys):
    write_frey(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--data", "frey-faces", "--data-dir", str(tmp_path / "data"),
                 "--epochs", "1", "--batch-size", "16", "--hidden", "16", "--latent-dim", "2",
                 "--no-progress", "--no-report", "--out", str(out), *extra]) == 0
    with Image.open(out / "samples.png") as png:
        width, height = png.size
    assert width / height == pytest.approx((8 * 22 + 2) / (8 * 30 + 2), rel=0.01)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-samples", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_examples"] == 4
    assert ("bits_per_dim" in result) == (not extra)


# ------------------------------------------------------------------------------------------
# binarized Fashion-MNIST (dynamic), as the Exemplar VAE runs it

def test_fashion_mnist_binarize_dynamic(tmp_path):
    rng = np.random.default_rng(3)
    for prefix, n in (("train", 20), ("t10k", 10)):
        for kind, array in (("images", rng.integers(0, 256, (n, 28, 28))),
                            ("labels", rng.integers(0, 10, n))):
            header = struct.pack(">I", 0x800 | array.ndim) + struct.pack(f">{array.ndim}I",
                                                                         *array.shape)
            path = tmp_path / f"{prefix}-{kind}-idx{array.ndim}-ubyte"
            path.write_bytes(header + array.astype(np.uint8).tobytes())
    ds = load_dataset("fashion-mnist", tmp_path, download=False)
    config = resolve(merge(RunConfig(), {"data": {"binarize": "dynamic"}}),
                     defaults=dataset_defaults("fashion-mnist"), value_kind=ds.value_kind,
                     levels=ds.levels)
    assert (config.model.likelihood, config.data.binarize) == ("bernoulli", "dynamic")
    prepared = prepare_data(ds, "dynamic", 0, lambda x: None)
    assert prepared.dynamic_binarize and torch.equal(prepared.train, ds.train)
    for split in (prepared.val, prepared.test):
        assert set(split.unique().tolist()) <= {0.0, 1.0}
    assert ds.class_names[0] == "T-shirt/top"


# ------------------------------------------------------------------------------------------
# non-square images in the pictures

def test_image_grids_keep_the_28x20_shape(tmp_path):
    from vaekit.view.images import make_grid, save_grid
    from vaekit.view.plots import labelled_grid

    faces = torch.rand(12, 1, 28, 20)
    grid = make_grid(faces, nrow=4, padding=2)
    assert grid.shape == (3 * 30 + 2, 4 * 22 + 2)
    np.testing.assert_array_equal(grid[2:30, 2:22], (faces[0, 0].numpy() * 255 + 0.5)
                                  .astype(np.uint8))
    save_grid(faces, tmp_path / "faces.png", nrow=4)
    with Image.open(tmp_path / "faces.png") as png:
        assert png.size == (2 * (4 * 22 + 2), 2 * (3 * 30 + 2))  # enlarged twice, not squashed
    labelled_grid(faces, 4, row_labels=["a", "b", "c"])


# ------------------------------------------------------------------------------------------
# the real files, when they are beside the checkout

def test_real_omniglot(shared_data):
    ds = load_dataset("omniglot", shared_data / "omniglot", val_fraction=0.1)
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (24345, 8070)
    assert len(ds.val) == 2434 and ds.data_shape == (1, 28, 28)
    assert len(ds.class_names) == 50 and ds.class_names[0] == "Arcadian"
    assert set(ds.test_labels.unique().tolist()) == set(range(50))
    mean = float(torch.cat([ds.train, ds.val, ds.test]).double().mean())
    assert 0.07 < mean < 0.09  # ink covers about 8% of the area


def test_real_caltech101_silhouettes(shared_data):
    ds = load_dataset("caltech101-silhouettes", shared_data / "caltech101-silhouettes")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4100, 2264, 2307)
    assert len(ds.class_names) == 101 and ds.class_names[:2] == ("Airplanes Side 2", "Faces 2")
    assert int(ds.train_labels.min()) == 0 and int(ds.train_labels.max()) == 100
    assert float(ds.train[:, 0, [0, -1]][:, :, [0, -1]].max()) == 0  # corners are background
    assert float(ds.train[:, 0, 10:18, 10:18].mean()) > 0.8  # the objects are in the middle


def test_real_frey_faces(shared_data):
    ds = load_dataset("frey-faces", shared_data / "frey-faces")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1565, 200, 200)
    assert ds.data_shape == (1, 28, 20)
    every = torch.cat([ds.train, ds.val, ds.test])
    assert float(every.mean()) * 255 == pytest.approx(154.46, abs=0.01)
