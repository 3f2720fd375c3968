"""dSprites rendered from its definition (vaekit.data.dsprites): determinism and pinned
checksums, the factor indexing, geometric invariants of the rendering against closed forms, the
fast (shifted) build against direct rendering, the cache and its failures, and the registered
data set. No test builds the full 737,280 images (a fixture refuses it); the checksum of the full
array is checked only when it has already been built in the cache folder."""

import hashlib
import itertools
import json
import math

import numpy as np
import pytest
import torch

from vaekit.cli import main
from vaekit.data import DATASET_NAMES, dataset_defaults, load_dataset
from vaekit.data import dsprites as ds
from vaekit.data.downloads import cache_dir
from vaekit.errors import DataError

# all 3 shapes x 6 scales x 40 orientations at positions (0, 0) and (31, 17): 1,440 images
SMALL_SHA256 = "2bad55e3f2b508df5e832875d5c49aa2aa8519882ed0f61059996058605dd780"
SMALL_CLASSES = np.array([(0, s, c, o, x, y) for s, c, o in
                          itertools.product(range(3), range(6), range(40))
                          for x, y in ((0, 0), (31, 17))])
TINY = ds.FactorGrid(scales=(0, 5), orientations=(0, 13), positions_x=(0, 1, 2, 9, 31),
                     positions_y=(0, 4, 31))  # 3 x 2 x 2 x 5 x 3 = 180 images
REAL_CACHE = cache_dir("dsprites")  # read before the fixtures below move the cache folder


@pytest.fixture(autouse=True)
def no_full_build(tmp_path, monkeypatch):
    """An empty cache folder, and no full build: CI must never render all 737,280 images."""
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "cache"))
    blocks = ds.packed_blocks

    def small_only(grid):
        assert grid != ds.FULL_GRID, "a test tried to build the full dSprites array"
        return blocks(grid)

    monkeypatch.setattr(ds, "packed_blocks", small_only)


@pytest.fixture(scope="module")
def small_images() -> np.ndarray:
    return ds.render(SMALL_CLASSES).reshape(3, 6, 40, 2, 64, 64)


def sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(images, axis=-1).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------------
# factors and indexing

def test_factor_grid_of_the_original():
    assert ds.NUM_IMAGES == 737_280 == ds.FULL_GRID.num_images
    values = ds.factor_values(np.array([[0, 0, 0, 0, 0, 0], [0, 2, 5, 39, 31, 31]]))
    np.testing.assert_array_equal(values, [[1, 1, 0.5, 0, 0, 0], [1, 3, 1, 2 * math.pi, 1, 1]])
    np.testing.assert_allclose(ds.FACTOR_VALUES[2], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(np.diff(ds.FACTOR_VALUES[3]), 2 * math.pi / 39)


def test_image_index_is_the_mixed_radix_number_of_the_classes():
    index = np.array([0, 1, 31, 32, 1024, 40 * 1024, 737_279, 123_456])
    classes = np.stack(np.unravel_index(index, (1, 3, 6, 40, 32, 32)), axis=1)
    np.testing.assert_array_equal(ds.FULL_GRID.classes(index), classes)
    np.testing.assert_array_equal(ds.image_index(classes), index)
    np.testing.assert_array_equal(ds.FULL_GRID.classes(np.array([737_279]))[0],
                                  [0, 2, 5, 39, 31, 31])


def test_a_sub_grid_lists_its_classes_in_mixed_radix_order():
    classes = TINY.classes()
    assert len(classes) == TINY.num_images == 180
    expected = list(itertools.product((0,), *TINY.per_factor()[1:]))
    np.testing.assert_array_equal(classes, expected)
    with pytest.raises(DataError, match="positions_x"):
        ds.FactorGrid(positions_x=(3, 1))
    with pytest.raises(DataError, match="scales"):
        ds.FactorGrid(scales=(6,))


def test_classes_out_of_range_are_refused():
    with pytest.raises(DataError, match="0..size - 1"):
        ds.render(np.array([[0, 3, 0, 0, 0, 0]]))
    with pytest.raises(DataError, match=r"\[N, 6\]"):
        ds.render(np.zeros((2, 5), np.int64))


def test_sample_factors_draws_every_class_of_the_grid():
    classes = ds.sample_factors(20_000, np.random.default_rng(0))
    assert classes.shape == (20_000, 6) and classes.dtype == np.int64
    for factor, size in enumerate(ds.FACTOR_SIZES):
        counts = np.bincount(classes[:, factor], minlength=size)
        assert len(counts) == size and counts.min() > 0.7 * 20_000 / size
    small = ds.sample_factors(500, np.random.default_rng(1), TINY)
    for factor, allowed in enumerate(TINY.per_factor()):
        assert set(small[:, factor]) <= set(allowed)


# ------------------------------------------------------------------------------------------
# rendering: determinism, checksum, geometry

def test_rendering_is_deterministic_and_matches_the_pinned_checksum(small_images):
    again = ds.render(SMALL_CLASSES[::-1])[::-1]  # another order, other chunks
    assert small_images.dtype == np.uint8 and set(np.unique(small_images)) == {0, 1}
    np.testing.assert_array_equal(again.reshape(small_images.shape), small_images)
    assert sha256(small_images) == SMALL_SHA256


def test_every_sprite_is_non_empty_and_well_inside_the_frame(small_images):
    # the four corner positions of every shape, scale and orientation
    classes = np.array([(0, s, c, o, x, y) for s, c, o in
                        itertools.product(range(3), range(6), range(40))
                        for x, y in ((0, 0), (0, 31), (31, 0), (31, 31))])
    images = ds.render(classes)
    assert images.reshape(len(images), -1).sum(axis=1).min() > 20
    border = np.ones((64, 64), bool)
    border[1:-1, 1:-1] = False
    assert not images[:, border].any()
    # every pixel that is on has its centre within the sprite's disc plus half a diagonal
    n, rows, cols = np.nonzero(images)
    centre_x = ds.FIRST_CENTRE + ds.POSITION_STEP * classes[n, 4]
    centre_y = ds.FIRST_CENTRE + ds.POSITION_STEP * classes[n, 5]
    radius = ds.RADIUS * ds.FACTOR_VALUES[2][classes[n, 2]]
    distance = np.hypot(cols + 0.5 - centre_x, rows + 0.5 - centre_y)
    assert np.all(distance <= radius + math.sqrt(0.5))


def heart_area() -> float:
    """The area of (x^2 + y^2 - 1)^3 <= x^2 y^3 by the midpoint rule on a fine grid."""
    step = 3 / 1500
    g = np.arange(-1.5, 1.5, step) + step / 2
    x, y = np.meshgrid(g, g)
    return float(np.count_nonzero((x * x + y * y - 1) ** 3 <= x * x * y ** 3)) * step ** 2


def test_mean_area_over_rotations_matches_the_closed_forms(small_images):
    areas = small_images.reshape(3, 6, 40, 2, -1).sum(axis=-1)  # [shape, scale, orientation, pos]
    unit = [2.0, math.pi * ds.ELLIPSE_AXES, heart_area() / ds.HEART_REACH ** 2]  # x (8 s)^2
    for shape, scale in itertools.product(range(3), range(6)):
        expected = unit[shape] * (ds.RADIUS * ds.FACTOR_VALUES[2][scale]) ** 2
        mean = areas[shape, scale].mean()
        assert mean == pytest.approx(expected, rel=0.04), (shape, scale)
        # pixelisation: every rotation and position stays within 12% of the mean
        assert np.abs(areas[shape, scale] / mean - 1).max() < 0.12, (shape, scale)


def test_area_grows_with_scale_for_every_shape_orientation_and_position(small_images):
    areas = small_images.reshape(3, 6, 40, 2, -1).sum(axis=-1)
    assert np.all(np.diff(areas, axis=1) >= 0)  # each shape is star-shaped about its centre
    ratio = areas[:, 5].mean(axis=(1, 2)) / areas[:, 0].mean(axis=(1, 2))
    np.testing.assert_allclose(ratio, 4, rtol=0.05)


def test_orientation_turns_counter_clockwise_and_the_heart_points_down():
    images = ds.render(np.array([[0, 1, 5, 0, 16, 16], [0, 1, 5, 10, 16, 16],
                                 [0, 0, 5, 2, 16, 16], [0, 2, 5, 0, 16, 16]]))
    ellipse, turned, square, heart = images

    def extent(image, axis):  # rows (axis 1) or columns (axis 0) holding a pixel that is on
        return np.count_nonzero(image.any(axis=axis))

    assert extent(ellipse, 0) > 1.7 * extent(ellipse, 1)  # wide
    assert extent(turned, 1) > 1.7 * extent(turned, 0)  # 10 / 39 of a turn (92 degrees): tall
    # 2 / 39 of a turn (18.5 degrees) counter-clockwise as displayed: the top corner of the
    # square moves right of its centre, the bottom corner left
    rows, cols = np.nonzero(square)
    assert cols[rows == rows.min()].mean() > cols.mean() + 2
    assert cols[rows == rows.max()].mean() < cols.mean() - 2
    rows, cols = np.nonzero(heart)
    centre = ds.FIRST_CENTRE + 16 * ds.POSITION_STEP
    assert rows.mean() + 0.5 < centre - 0.5  # the mass of the lobes is above the centre
    assert np.count_nonzero(rows == rows.max()) <= 3  # the point at the bottom
    top = heart[rows.min()].astype(int)
    assert np.count_nonzero(np.diff(top) == 1) == 2  # two lobes


def test_moving_two_position_classes_shifts_the_image_by_three_pixels():
    base = np.array([(0, s, c, o, x, y) for s, c, o in
                     itertools.product(range(3), (0, 5), (0, 7, 20)) for x in (0, 1)
                     for y in (0, 1)])
    images = ds.render(base)
    for dx, dy in ((2, 0), (0, 2), (6, 10), (30, 30)):
        moved = base + np.array([0, 0, 0, 0, dx, dy])
        expected = np.zeros_like(images)
        sx, sy = 3 * dx // 2, 3 * dy // 2
        expected[:, sy:, sx:] = images[:, :64 - sy, :64 - sx]
        np.testing.assert_array_equal(ds.render(moved), expected)
    # one class is a pixel and a half: the mass stays, the bits do not simply shift
    one = ds.render(base + np.array([0, 0, 0, 0, 1, 0]))
    assert not np.array_equal(one, images)


def test_the_fast_build_equals_direct_rendering_in_mixed_radix_order():
    packed = ds.build_packed(TINY)
    assert packed.shape == (180, 64, 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, np.packbits(ds.render(TINY.classes()), axis=-1))
    np.testing.assert_array_equal(ds.unpack(packed).numpy()[:, 0], ds.render(TINY.classes()))


# ------------------------------------------------------------------------------------------
# the cache

def test_the_cache_is_built_once_with_a_sidecar_and_no_leftovers(tmp_path, monkeypatch):
    sha = ds.build_cache(tmp_path, TINY)
    array_path, meta_path = ds.cache_paths(tmp_path, TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([array_path.name, meta_path.name])
    meta = json.loads(meta_path.read_text())
    assert meta["sha256"] == sha == hashlib.sha256(ds.build_packed(TINY).tobytes()).hexdigest()
    assert meta["format"] == ds.CACHE_FORMAT and meta["shape"] == [180, 64, 8]
    monkeypatch.setattr(ds, "build_cache", lambda *args: pytest.fail("built again"))
    np.testing.assert_array_equal(ds.open_packed(tmp_path, TINY), ds.build_packed(TINY))
    # the full grid has the plain names
    assert ds.cache_paths(tmp_path, ds.FULL_GRID)[0].name == "dsprites-v1.npy"


def test_an_array_without_its_sidecar_is_an_interrupted_build_and_is_built_again(tmp_path):
    array_path, meta_path = ds.cache_paths(tmp_path, TINY)
    array_path.write_bytes(b"half an array")
    packed = ds.open_packed(tmp_path, TINY)
    assert packed.shape == (180, 64, 8) and meta_path.is_file()
    assert ds.open_packed(tmp_path / "none", TINY, build=False) is None


def corrupt_flip(path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[:-512])


def other_grid(path):
    meta = json.loads(path.read_text())
    meta["grid"]["scales"] = [0, 4]
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("which,damage,needle", [
    (0, corrupt_flip, "not its sidecar's (corrupt)"),
    (0, truncate, "not a readable .npy array"),
    (0, lambda path: path.unlink(), "is missing"),
    (1, lambda path: path.write_text("{"), "not readable JSON"),
    (1, other_grid, "does not describe this grid"),
])
def test_a_damaged_cache_is_refused_with_one_line(tmp_path, which, damage, needle):
    ds.build_cache(tmp_path, TINY)
    damage(ds.cache_paths(tmp_path, TINY)[which])
    with pytest.raises(DataError) as error:
        ds.open_packed(tmp_path, TINY)
    message = str(error.value)
    assert needle in message and "\n" not in message and "renders them again" in message


def test_observe_reads_the_cache_or_renders_the_same_images(tmp_path, monkeypatch):
    classes = ds.sample_factors(64, np.random.default_rng(2))
    rendered = ds.observe(classes, tmp_path)  # no cache there: rendered, nothing built
    assert rendered.shape == (64, 1, 64, 64) and rendered.dtype == torch.float32
    assert not list(tmp_path.iterdir())
    np.testing.assert_array_equal(rendered.numpy()[:, 0], ds.render(classes))
    # a stand-in for the full cache: the rows of these classes hold their images
    packed = np.zeros((ds.NUM_IMAGES, 64, 8), np.uint8)
    packed[ds.image_index(classes)] = np.packbits(ds.render(classes), axis=-1)
    monkeypatch.setattr(ds, "open_packed", lambda directory, grid, build: packed)
    torch.testing.assert_close(ds.observe(classes, tmp_path), rendered, rtol=0, atol=0)


@pytest.mark.skipif(not ds.cache_paths(REAL_CACHE, ds.FULL_GRID)[1].is_file(),
                    reason="the full dSprites array has not been built in the cache folder")
def test_the_full_array_in_the_cache_has_the_pinned_checksum():
    packed = ds.open_packed(REAL_CACHE, ds.FULL_GRID, build=False)  # verifies the sidecar's sha
    meta = json.loads(ds.cache_paths(REAL_CACHE, ds.FULL_GRID)[1].read_text())
    assert meta["sha256"] == ds.FULL_SHA256
    # and its rows are the directly rendered images
    rows = ds.image_index(SMALL_CLASSES)
    assert hashlib.sha256(packed[rows].tobytes()).hexdigest() == SMALL_SHA256


# ------------------------------------------------------------------------------------------
# the registered data set

@pytest.fixture
def tiny_default(monkeypatch):
    monkeypatch.setattr(ds, "DEFAULT_GRID", TINY)
    monkeypatch.setattr(ds, "DEFAULT_SIZES", (100, 40))


def test_the_registry_has_dsprites():
    assert "dsprites" in DATASET_NAMES
    assert dataset_defaults("dsprites")["latent_dim"] == 10


def test_load_dataset_gives_fixed_binary_splits_with_shape_labels(tmp_path, tiny_default):
    data = load_dataset("dsprites", tmp_path, val_fraction=0.2, split_seed=3)
    assert data.train.shape == (80, 1, 64, 64) and data.val.shape == (20, 1, 64, 64)
    assert data.test.shape == (40, 1, 64, 64) and data.train.dtype == torch.float32
    assert data.value_kind == "binary" and data.levels == 2 and data.is_image
    assert data.class_names == ("square", "ellipse", "heart")
    seen = set()
    for split in ("train", "val", "test"):
        x, labels = data.split(split)
        factors = ds.dsprites_factors(split, val_fraction=0.2, split_seed=3)
        np.testing.assert_array_equal(x.numpy()[:, 0], ds.render(factors))
        np.testing.assert_array_equal(labels.numpy(), factors[:, 1])
        index = set(ds.image_index(factors).tolist())
        assert not index & seen
        seen |= index
    # the test set and the pool are fixed; --split-seed moves images between train and val
    other = load_dataset("dsprites", tmp_path, val_fraction=0.2, split_seed=4)
    torch.testing.assert_close(other.test, data.test)
    assert not torch.equal(other.val, data.val)
    torch.testing.assert_close(torch.cat([other.train, other.val]).sum(0),
                               torch.cat([data.train, data.val]).sum(0))


def test_a_subset_larger_than_the_grid_is_refused(tmp_path, tiny_default, monkeypatch):
    monkeypatch.setattr(ds, "DEFAULT_SIZES", (170, 20))
    with pytest.raises(DataError, match="does not fit the grid's 180 images"):
        load_dataset("dsprites", tmp_path)


def test_dsprites_trains_one_epoch_and_evaluates(tmp_path, tiny_default, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "dsprites", "--data-dir", str(tmp_path / "data"),
                 "--epochs", "1", "--batch-size", "16", "--hidden", "16", "--latent-dim", "2",
                 "--no-progress", "--no-report", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-samples", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_examples"] == 40 and "bits_per_dim" in result
