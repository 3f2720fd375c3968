"""Preparing a data set as a run sees it: the one place binarization happens.

- **Static** (fixed) binarization: one draw x_b ~ Bernoulli(x) with a seed from
  :data:`BINARIZATION_SEEDS`, so validation and test sets (and, with ``--binarize static``, the
  training set) are the same binary data every time (Salakhutdinov & Murray 2008).
- **Dynamic** binarization: a fresh draw of each training batch every time it is seen
  (:func:`dynamic_binarize`), while validation and test sets are binarized once as above.

Training, evaluation, reports and the explorer all call :func:`prepare_split`, so a run's test
set is the same binary data wherever it is used."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError
from .dataset import Dataset

# data.binarize values; "auto" is resolved from the likelihood (see vaekit.config.resolve)
BINARIZATIONS = ("auto", "dynamic", "static", "none")

# The seed of split s's fixed binarization is data.split_seed + BINARIZATION_SEEDS[s]: distinct
# per split, and the same in training, evaluation and every view of a run.
BINARIZATION_SEEDS = {"val": 1, "test": 2, "train": 3}


def binarize_fixed(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Static binarization: x_b = [u < x] with u ~ U[0, 1) drawn from a generator seeded with
    ``seed``, so x_b ~ Bernoulli(x) and the same every time.

    ``x``: grey levels in [0, 1], any shape; returns a tensor of 0/1 of the same shape and dtype.
    Uses ``rand < x``: torch.bernoulli is several times slower on CPU."""
    dtype = x.dtype if x.is_floating_point() else torch.float32
    generator = torch.Generator(device=x.device).manual_seed(seed)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=dtype)
    return (u < x).to(dtype)


def dynamic_binarize(x: torch.Tensor) -> torch.Tensor:
    """A fresh draw x_b = [u < x] each time, u uniform on the 2^16 levels {j / 2^16}: so
    P(x_b = 1) = ceil(2^16 x) / 2^16, Bernoulli(x) to within 2^-16 (exact at 0 and 1; grey
    levels of 8-bit images k/255 are off by less than 1.6e-5).

    Written by hand for speed: torch's CPU generator (mt19937) runs on one thread and costs per
    draw, and ``rand_like`` takes one 32-bit draw per pixel (0.47 ms per 128 x 784 batch on a
    2-core CPU, about a tenth of a training step) while 64 random bits cover 4 pixels here
    (0.13 ms); ``torch.bernoulli`` is slower still. On other devices (a parallel generator)
    it is ``rand_like(x) < x``. Uses the global generator, so seeding and resuming from a saved
    random state reproduce the draws exactly."""
    if x.device.type != "cpu":
        return (torch.rand_like(x) < x).to(x.dtype)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
    bits.random_(-(2**63), None)  # all 64 bits uniform (to=None: the whole int64 range)
    u = bits.view(torch.int16)[:n].view(x.shape)  # uniform on {-2^15, ..., 2^15 - 1}
    return (u < x.float() * 65536.0 - 32768.0).to(x.dtype)


def check_binarizable(mode: str, dataset: Dataset) -> None:
    if mode != "none" and dataset.value_kind == "real":
        raise DataError(
            f"--binarize {mode} needs data in [0, 1] but '{dataset.name}' has real values; "
            "use --binarize none with --likelihood gaussian"
        )


def quantize(x: torch.Tensor, num_levels: int, data_levels: int | None = None) -> torch.Tensor:
    """Grey values x in [0, 1] as integer levels k in {0, ..., n - 1} (uint8), n = ``num_levels``.

    When the data come from ``data_levels`` = m known levels (x = l / (m - 1)): k = l for n = m,
    else k = floor(l n / m) (for 8-bit data and n = 2^N the top N bits, l >> (8 - N)). When m is
    not known: k = min(floor(x n), n - 1)."""
    if not 2 <= num_levels <= 256:
        raise DataError(f"{num_levels} levels do not fit in 8 bits; use at most 256 (--bits 8)")
    x = x.double()
    if data_levels is not None:
        level = torch.round(x * (data_levels - 1))
        k = level if num_levels == data_levels else torch.floor(level * num_levels / data_levels)
    else:
        k = torch.floor(x * num_levels)
    return k.clamp(0, num_levels - 1).to(torch.uint8)


def prepare_split(x: torch.Tensor, split: str, mode: str, split_seed: int,
                  levels: int | None = None, data_levels: int | None = None) -> torch.Tensor:
    """Split ``split`` of a run's data as the run evaluates it: binarized once with the split's
    fixed seed when the run binarizes (statically or dynamically), quantized to ``levels``
    integer levels (uint8, :func:`quantize`) for a discrete grey-level likelihood, else as it
    is."""
    if levels is not None:
        if not bool(((x >= 0) & (x <= 1)).all()):
            raise DataError("a discrete grey-level likelihood needs grey values in [0, 1]; "
                            "rescale the data or use --likelihood gaussian")
        return quantize(x, levels, data_levels)
    if mode == "none":
        return x
    return binarize_fixed(x, split_seed + BINARIZATION_SEEDS[split])


@dataclass
class PreparedData:
    """Tensors ready for the training loop: validation/test binarized once when binarization is
    on; ``dynamic_binarize`` says whether every training batch is drawn afresh."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor | None
    dynamic_binarize: bool
    # the Gaussian noise of each training value (:attr:`Dataset.train_scale`), else None
    train_scale: torch.Tensor | None = None

    def draw_features(self, x_and_scale: torch.Tensor) -> torch.Tensor:
        """A fresh draw x = mean + scale * eps, eps ~ N(0, I) (the global generator, so seeding
        and resuming reproduce it), of a batch of ``[mean, scale]`` rows (:meth:`batch_source`)."""
        mean, scale = x_and_scale.chunk(2, dim=1)
        return torch.addcmul(mean, scale, torch.randn_like(mean))

    def batch_source(self) -> torch.Tensor:
        """What the training batches are sliced from: the training split, or with noisy
        features ``[mean, scale]`` side by side (``[N, 2 D]``), so that the two stay aligned
        through shuffling, sharding and the labelled batches of a semi-supervised run."""
        if self.train_scale is None:
            return self.train
        return torch.cat([self.train, self.train_scale], dim=1)


def prepare_data(dataset: Dataset, mode: str, split_seed: int, check_support,
                 levels: int | None = None) -> PreparedData:
    """Applies the resolved binarization ``mode`` (or, with ``levels``, the quantization to that
    many integer levels) and checks every split the model will see with ``check_support`` (the
    likelihood's support check: grey levels under a plain Bernoulli likelihood are refused)."""
    check_binarizable(mode, dataset)
    prepare = lambda x, split: prepare_split(x, split, mode, split_seed, levels,  # noqa: E731
                                             dataset.levels)
    val = prepare(dataset.val, "val")
    test = prepare(dataset.test, "test")
    train = prepare(dataset.train, "train") if mode == "static" or levels is not None \
        else dataset.train
    for split in (val, test) if mode == "dynamic" else (train, val, test):
        check_support(split)
    if dataset.train_scale is not None and (mode != "none" or levels is not None):
        raise DataError(f"'{dataset.name}' has noisy features (train_scale): they are real "
                        "values; use --binarize none with --likelihood gaussian")
    return PreparedData(train, val, test, dataset.test_labels, mode == "dynamic",
                        dataset.train_scale)
