"""dSprites (Matthey, Higgins, Hassabis & Lerchner 2017) rendered here from its definition (the
DeepMind ``.npz`` cannot be downloaded here; docs/data.md says how the rendering differs): 737,280
binary 64x64 images of one sprite, every combination of the factors (:data:`FACTOR_NAMES`) color
(1), shape (square, ellipse, heart), scale (6, linspace(0.5, 1)), orientation (40, linspace(0,
2 pi): 0 and 2 pi both, as in the original), posX and posY (32 each, linspace(0, 1)) once, image
i having the classes ``np.unravel_index(i, FACTOR_SIZES)``; cached as packed bits with a sha256.

**Rendering.** Pixel (row r, column c) covers [c, c + 1) x [r, r + 1) and is on when at least 8
of its 4 x 4 points (c + (2a + 1) / 8, r + (2b + 1) / 8) lie in the closed shape. At scale s a
shape fits a disc of radius 8 s px about its centre: a square of half-diagonal 8 s, an ellipse of
semi-axes 8 s and 4 s (horizontal at orientation 0), the heart (x^2 + y^2 - 1)^3 <= x^2 y^3 (y up)
about its bounding box's centre (0, 0.1183), divided by its reach 1.3367. It turns
counter-clockwise (as displayed) about its centre. Position class k puts the centre 8.75 + 1.5 k
px from the left (posX) or top (posY) edge, so a sprite keeps 0.75 px from every edge and two
classes are exactly 3 pixels apart: the full build renders four positions per (shape, scale,
orientation) and moves them by whole pixels, bit for bit the images :func:`render` draws
directly. Only exact float64 arithmetic and ``math.cos`` / ``math.sin`` of the 40 angles enter,
so the array is the same every time: :data:`FULL_SHA256`."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .arrays import held_out_size, split_indices
from .dataset import SPLITS, Dataset
from .downloads import dataset_dir

FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
IMAGE_SIZE = 64
FACTOR_VALUES = (np.ones(1), np.arange(1.0, 4.0), np.linspace(0.5, 1, 6),
                 np.linspace(0, 2 * np.pi, 40), np.linspace(0, 1, 32), np.linspace(0, 1, 32))

SUBSAMPLES = 4  # sub-pixel points per pixel side: on when at least half of the 16 are inside
RADIUS = 8.0  # px: at scale 1 every shape lies in a disc of this radius about its centre
FIRST_CENTRE = 8.75  # px: the centre of position class 0 (pixel edges are whole numbers)
POSITION_STEP = 1.5  # px between position classes
ELLIPSE_AXES = 0.5  # semi-minor / semi-major axis
HEART_CENTRE = 0.1183  # y of the centre of the heart curve's bounding box, y in [-1, 1.2367]
HEART_REACH = 1.3367  # the curve's farthest point from that centre (1.33662): fits the disc
_SHIFT = int(2 * POSITION_STEP)  # whole pixels between position classes k and k + 2
_WINDOW = 20  # px rendered around each centre (a sprite covers at most 17)
_COS, _SIN = (np.array([f(t) for t in FACTOR_VALUES[3]]) for f in (math.cos, math.sin))

CACHE_FORMAT = 1  # the file name carries it: a new rendering gets a new file, never a mix-up
RENDERING = {"subsamples": SUBSAMPLES, "radius": RADIUS, "first_centre": FIRST_CENTRE,
             "position_step": POSITION_STEP, "ellipse_axes": ELLIPSE_AXES,
             "heart_centre": HEART_CENTRE, "heart_reach": HEART_REACH}
FULL_SHA256 = "1bdd38524b32f96e0c153287071335fc48f2d8a78dbdfb11b438f4045a3abf4b"
# the default subset of --data dsprites, drawn once with SUBSET_SEED: a training pool (train and
# validation, split by --val-fraction and --split-seed) and a test set, disjoint
DEFAULT_SIZES = (100_000, 10_000)
SUBSET_SEED = 0


# ------------------------------------------------------------------------------------------
# Factors

@dataclass(frozen=True)
class FactorGrid:
    """The images of every combination of the listed classes, in mixed-radix order: by default
    all; a smaller grid (``positions_x=tuple(range(0, 32, 4))``, ...) for tests and tutorials."""

    shapes: tuple[int, ...] = (0, 1, 2)
    scales: tuple[int, ...] = tuple(range(6))
    orientations: tuple[int, ...] = tuple(range(40))
    positions_x: tuple[int, ...] = tuple(range(32))
    positions_y: tuple[int, ...] = tuple(range(32))

    def __post_init__(self) -> None:
        for field, size in zip(fields(self), FACTOR_SIZES[1:]):
            classes = tuple(int(c) for c in getattr(self, field.name))
            object.__setattr__(self, field.name, classes)
            if not classes or list(classes) != sorted(set(classes) & set(range(size))):
                raise DataError(f"FactorGrid.{field.name} must be increasing classes in "
                                f"0..{size - 1}, got {classes}")

    def per_factor(self) -> tuple[tuple[int, ...], ...]:
        """The classes of each of the six factors (color has one)."""
        return ((0,), *(getattr(self, field.name) for field in fields(self)))

    @property
    def num_images(self) -> int:
        return math.prod(len(c) for c in self.per_factor())

    def classes(self, indices: np.ndarray | None = None) -> np.ndarray:
        """The factor classes ``[N, 6]`` int64 of the grid's images ``indices`` (all by default)."""
        indices = np.arange(self.num_images) if indices is None else np.asarray(indices, np.int64)
        digits = np.unravel_index(indices, tuple(len(c) for c in self.per_factor()))
        return np.stack([np.asarray(c)[d] for c, d in zip(self.per_factor(), digits)], axis=1)


FULL_GRID = FactorGrid()
DEFAULT_GRID = FULL_GRID  # what --data dsprites draws from


def _as_classes(classes: np.ndarray) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.ndim != 2 or classes.shape[1] != 6 or not np.issubdtype(classes.dtype, np.integer):
        raise DataError(f"dsprites factor classes must be integers [N, 6], got {classes.dtype} "
                        f"{classes.shape}")
    if len(classes) and (np.any(classes < 0) or np.any(classes >= np.array(FACTOR_SIZES))):
        raise DataError(f"dsprites factor classes must lie in 0..size - 1 for sizes {FACTOR_SIZES}")
    return classes.astype(np.int64)


def image_index(classes: np.ndarray) -> np.ndarray:
    """The index in the full data set of the images of ``classes [N, 6]``: the mixed-radix number
    of the classes, ``np.ravel_multi_index(classes.T, FACTOR_SIZES)``."""
    return np.ravel_multi_index(tuple(_as_classes(classes).T), FACTOR_SIZES)


def factor_values(classes: np.ndarray) -> np.ndarray:
    """The original's ``latents_values`` of ``classes [N, 6]``: float64 [N, 6] (color 1, shape 1..3,
    scale, orientation in radians, posX, posY in [0, 1])."""
    classes = _as_classes(classes)
    return np.stack([v[classes[:, f]] for f, v in enumerate(FACTOR_VALUES)], axis=1)


def sample_factors(n: int, rng: np.random.Generator, grid: FactorGrid | None = None) -> np.ndarray:
    """``n`` factor classes ``[n, 6]`` int64, each factor uniform over ``grid`` (default: all):
    with :func:`observe`, the factor sampler of disentanglement metrics."""
    grid = FULL_GRID if grid is None else grid
    return np.stack([rng.choice(np.asarray(c), n) for c in grid.per_factor()], axis=1)


# ------------------------------------------------------------------------------------------
# Rendering

def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether the points (u, v), in units of the sprite's disc radius (v up), lie in the shape."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= math.sqrt(0.5)
    if shape == 1:
        w = v / ELLIPSE_AXES
        return u * u + w * w <= 1.0
    x, y = u * HEART_REACH, v * HEART_REACH + HEART_CENTRE
    x2, r = x * x, x * x + y * y - 1.0
    return r * r * r <= x2 * (y * y * y)  # products, not pow: the same bits everywhere


def _render_chunk(classes: np.ndarray) -> np.ndarray:
    n, size, pad = len(classes), IMAGE_SIZE, _WINDOW
    radius = FACTOR_VALUES[2][classes[:, 2]] * RADIUS  # [n] px
    cos, sin = _COS[classes[:, 3]], _SIN[classes[:, 3]]
    centre_x = FIRST_CENTRE + POSITION_STEP * classes[:, 4]  # exact multiples of 1/4
    centre_y = FIRST_CENTRE + POSITION_STEP * classes[:, 5]
    origin_x = np.floor(centre_x).astype(np.int64) - _WINDOW // 2  # [n] the window's first pixel
    origin_y = np.floor(centre_y).astype(np.int64) - _WINDOW // 2
    offsets = (np.arange(_WINDOW * SUBSAMPLES) + 0.5) / SUBSAMPLES  # sub-points, px from origin
    # each point's coordinates depend only on its pixel and the centre, not on the window
    dx = ((origin_x[:, None] + offsets) - centre_x[:, None])[:, None, :]  # [n, 1, P] right
    dy = (centre_y[:, None] - (origin_y[:, None] + offsets))[:, :, None]  # [n, P, 1] up
    cos, sin, radius = cos[:, None, None], sin[:, None, None], radius[:, None, None]
    u = (cos * dx + sin * dy) / radius  # [n, P, P]: the point turned back by the orientation
    v = (cos * dy - sin * dx) / radius
    inside = np.zeros(u.shape, bool)
    for shape in np.unique(classes[:, 1]):
        rows = classes[:, 1] == shape
        inside[rows] = _inside(int(shape), u[rows], v[rows])
    counts = inside.reshape(n, _WINDOW, SUBSAMPLES, _WINDOW, SUBSAMPLES).sum(axis=(2, 4))
    canvas = np.zeros((n, size + 2 * pad, size + 2 * pad), np.uint8)
    steps = np.arange(_WINDOW)
    canvas[np.arange(n)[:, None, None], (pad + origin_y[:, None] + steps)[:, :, None],
           (pad + origin_x[:, None] + steps)[:, None, :]] = counts >= SUBSAMPLES ** 2 // 2
    images = canvas[:, pad:pad + size, pad:pad + size]
    if images.sum() != canvas.sum():  # by construction (8.75 - 8 = 0.75 px of margin)
        raise RuntimeError("a dsprites sprite left the frame")
    return images


def render(classes: np.ndarray, chunk: int = 512) -> np.ndarray:
    """The images of any factor classes ``[N, 6]`` rendered directly (see the module docstring),
    without the cache: uint8 [N, 64, 64] in {0, 1}, equal bit for bit to the full data set's."""
    classes = _as_classes(classes)
    out = np.empty((len(classes), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for start in range(0, len(classes), chunk):
        out[start:start + chunk] = _render_chunk(classes[start:start + chunk])
    return out


def packed_blocks(grid: FactorGrid):
    """The images of ``grid`` in its order, packed (``np.packbits`` along rows: uint8 [n, 64, 8]),
    one block per (shape, scale). Four images per orientation are rendered, at position classes
    (0 | 1, 0 | 1); position class k is the one of parity k % 2 moved 3 (k // 2) pixels."""
    orientations = np.asarray(grid.orientations)
    for shape, scale in itertools.product(grid.shapes, grid.scales):
        refs = np.array([(0, shape, scale, o, x, y) for o in orientations
                         for x in (0, 1) for y in (0, 1)])
        refs = render(refs).reshape(len(orientations), 2, 2, IMAGE_SIZE, IMAGE_SIZE)
        moved_x = np.zeros((len(orientations), len(grid.positions_x), 2, IMAGE_SIZE, IMAGE_SIZE),
                           np.uint8)  # [O, X, parity of y, H, W]
        for a, k in enumerate(grid.positions_x):
            s = _SHIFT * (k // 2)
            moved_x[:, a, :, :, s:] = refs[:, k % 2, :, :, :IMAGE_SIZE - s]
        packed_x = np.packbits(moved_x, axis=-1)
        block = np.zeros((len(orientations), len(grid.positions_x), len(grid.positions_y),
                          IMAGE_SIZE, IMAGE_SIZE // 8), np.uint8)
        for b, k in enumerate(grid.positions_y):
            s = _SHIFT * (k // 2)
            block[:, :, b, s:] = packed_x[:, :, k % 2, :IMAGE_SIZE - s]
        yield block.reshape(-1, IMAGE_SIZE, IMAGE_SIZE // 8)


def build_packed(grid: FactorGrid | None = None) -> np.ndarray:
    """All images of ``grid`` (the full grid by default: 377 MB), packed, uint8 [N, 64, 8]."""
    return np.concatenate(list(packed_blocks(FULL_GRID if grid is None else grid)))


def unpack(packed: np.ndarray, indices: np.ndarray | None = None, chunk: int = 8192
           ) -> torch.Tensor:
    """Rows ``indices`` (all by default) of a packed array as float32 images [n, 1, 64, 64]."""
    indices = np.arange(len(packed)) if indices is None else np.asarray(indices)
    x = torch.empty((len(indices), 1, IMAGE_SIZE, IMAGE_SIZE))
    for start in range(0, len(indices), chunk):
        bits = np.unpackbits(packed[indices[start:start + chunk]], axis=-1)
        x[start:start + len(bits), 0] = torch.from_numpy(bits)
    return x


# ------------------------------------------------------------------------------------------
# The cache: <dir>/dsprites-v1.npy (packed) and dsprites-v1.json (grid, rendering, sha256)

def cache_paths(directory: Path, grid: FactorGrid) -> tuple[Path, Path]:
    """The array and its JSON sidecar in ``directory`` (a smaller grid's names carry its tag)."""
    stem = f"dsprites-v{CACHE_FORMAT}"
    if grid != FULL_GRID:
        stem += "-" + hashlib.sha256(json.dumps(asdict(grid)).encode()).hexdigest()[:12]
    return directory / f"{stem}.npy", directory / f"{stem}.json"


def _write_atomically(path: Path, write) -> None:
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    try:
        write(name)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def build_cache(directory: Path, grid: FactorGrid | None = None) -> str:
    """Renders ``grid`` into ``directory``, array then sidecar, each to a temporary file renamed
    (an interrupted build leaves no sidecar: the next load builds again). Returns the sha256."""
    grid = FULL_GRID if grid is None else grid
    array_path, meta_path = cache_paths(directory, grid)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"dsprites: cannot create {directory} ({error.strerror or error}); pass "
                        "--data-dir to a writable folder") from error
    digest = hashlib.sha256()

    def write_array(name: str) -> None:
        out = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8,
                                        shape=(grid.num_images, IMAGE_SIZE, IMAGE_SIZE // 8))
        blocks = out.reshape(len(grid.shapes) * len(grid.scales), -1, *out.shape[1:])
        for i, block in enumerate(packed_blocks(grid)):
            blocks[i] = block
            digest.update(block.data)
        out.flush()

    _write_atomically(array_path, write_array)
    meta = {"format": CACHE_FORMAT, "shape": [grid.num_images, IMAGE_SIZE, IMAGE_SIZE // 8],
            "packing": "np.packbits along rows, big bit order", "factors": list(FACTOR_NAMES),
            "grid": asdict(grid), "rendering": RENDERING, "sha256": digest.hexdigest()}
    _write_atomically(meta_path, lambda name: Path(name).write_text(json.dumps(meta, indent=1)))
    return meta["sha256"]


_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: hashed once per process


def open_packed(directory: Path, grid: FactorGrid | None = None, *, build: bool = True
                ) -> np.ndarray | None:
    """The cached packed images of ``grid`` (memory-mapped, uint8 [N, 64, 8]), built first when
    the sidecar is missing and ``build`` (else None); its sha256 is checked once per process. A
    cache that does not match its sidecar or this rendering is refused with a one-line DataError
    (delete it and it is built again): vaekit never overwrites a file it cannot account for."""
    grid = FULL_GRID if grid is None else grid
    array_path, meta_path = cache_paths(directory, grid)
    if not meta_path.is_file():
        if not build:
            return None
        build_cache(directory, grid)

    def refuse(path: Path, what: str) -> DataError:
        return DataError(f"dsprites: {path} {what}; delete {array_path.name} and "
                         f"{meta_path.name} and vaekit renders them again")

    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as error:
        raise refuse(meta_path, f"is not readable JSON ({error})") from error
    expected = {"format": CACHE_FORMAT, "grid": json.loads(json.dumps(asdict(grid))),
                "rendering": RENDERING}
    for key, value in expected.items():
        if not isinstance(meta, dict) or meta.get(key) != value:
            raise refuse(meta_path, f"does not describe this {key} ({value})")
    try:
        packed = np.load(array_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise refuse(array_path, f"is missing or not a readable .npy array ({error})") from error
    shape = (grid.num_images, IMAGE_SIZE, IMAGE_SIZE // 8)
    if packed.shape != shape or packed.dtype != np.uint8:
        raise refuse(array_path, f"holds {packed.dtype} {packed.shape}; expected uint8 {shape}")
    stat = array_path.stat()
    key = (str(array_path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(key) != meta.get("sha256"):
        digest = hashlib.sha256()
        for start in range(0, len(packed), 65536):
            digest.update(np.ascontiguousarray(packed[start:start + 65536]).data)
        actual = digest.hexdigest()
        if actual != meta.get("sha256"):
            raise refuse(array_path, f"has sha256 {actual}, not its sidecar's (corrupt)")
        _VERIFIED[key] = actual
    return packed


def observe(classes: np.ndarray, data_dir: str | Path | None = None, *, build: bool = False
            ) -> torch.Tensor:
    """The images of factor classes ``[n, 6]``, float32 [n, 1, 64, 64]: read from the cached full
    array (in ``data_dir``, else the cache folder; with ``build`` rendered there first when
    missing, 5 s: worth it beyond some 10,000 images), else rendered one by one."""
    packed = open_packed(dataset_dir("dsprites", data_dir), FULL_GRID, build=build)
    if packed is None:
        return unpack(np.packbits(render(classes), axis=-1))
    return unpack(packed, image_index(classes))


# ------------------------------------------------------------------------------------------
# The registered data set

def subset_indices(grid: FactorGrid, sizes: tuple[int, int], val_fraction: float,
                   split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid indices of the train, validation and test images, each sorted: ``sizes`` = (pool,
    test) images drawn once without replacement with :data:`SUBSET_SEED`, then ``val_fraction``
    of the pool held out for validation with ``split_seed``."""
    pool_size, test_size = sizes
    if pool_size + test_size > grid.num_images or pool_size < 2 or test_size < 1:
        raise DataError(f"dsprites: a subset of {pool_size} + {test_size} images does not fit the "
                        f"grid's {grid.num_images} images")
    order = np.random.default_rng(SUBSET_SEED).permutation(grid.num_images)
    test, pool = np.sort(order[:test_size]), np.sort(order[test_size:test_size + pool_size])
    kept, val = split_indices(pool_size, [held_out_size(pool_size, val_fraction, 1)], split_seed)
    return pool[kept], pool[val], test


def dsprites_factors(split: str, *, val_fraction: float = 0.1, split_seed: int = 0,
                     grid: FactorGrid | None = None, sizes: tuple[int, int] | None = None
                     ) -> np.ndarray:
    """The factor classes [N, 6] int64 of the images of ``split`` ("train", "val", "test") of
    :func:`load_dsprites` with the same arguments, in the Dataset's order
    (:func:`factor_values` gives the values)."""
    grid = DEFAULT_GRID if grid is None else grid
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of: {', '.join(SPLITS)}")
    parts = subset_indices(grid, DEFAULT_SIZES if sizes is None else sizes, val_fraction,
                           split_seed)
    return grid.classes(parts[SPLITS.index(split)])


def load_dsprites(data_dir: Path | None, *, val_fraction: float, split_seed: int,
                  download: bool, grid: FactorGrid | None = None,
                  sizes: tuple[int, int] | None = None) -> Dataset:
    """``--data dsprites``: a fixed subset of the generated dSprites, binary float32 images
    [N, 1, 64, 64], labelled by shape (square, ellipse, heart).

    By default :data:`DEFAULT_SIZES`: 100,000 training images (``val_fraction`` of them held out
    for validation with ``split_seed``: 90,000 / 10,000) and 10,000 test images, drawn with seed 0
    from the 737,280 (``grid`` and ``sizes`` pick a smaller grid or subset). The full array is
    rendered once into ``data_dir`` (else the cache folder, ``$VAEKIT_DATA_DIR/dsprites``) and
    read from there; nothing is downloaded (``download`` is ignored). The factors of each split:
    :func:`dsprites_factors`."""
    grid = DEFAULT_GRID if grid is None else grid
    train, val, test = subset_indices(grid, DEFAULT_SIZES if sizes is None else sizes,
                                      val_fraction, split_seed)
    packed = open_packed(dataset_dir("dsprites", data_dir), grid)
    labels = {name: torch.from_numpy(grid.classes(index)[:, 1])
              for name, index in (("train", train), ("val", val), ("test", test))}
    return Dataset(
        name="dsprites", train=unpack(packed, train), val=unpack(packed, val),
        test=unpack(packed, test), train_labels=labels["train"], val_labels=labels["val"],
        test_labels=labels["test"], value_kind="binary", is_image=True, class_names=SHAPE_NAMES,
        levels=2,
    )
