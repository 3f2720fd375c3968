"""Model families: one class plus one registry entry each.

A family is a subclass of :class:`~vaekit.model.VAE` that says, besides its math:

- ``from_config(cfg, data_shape)``: the model a resolved config describes;
- ``config_errors(model, train, data)``: its rules on the config (a one-line message or
  None), which config validation collects for the family the config names;
- ``condition_kind_of(cfg, data)``: what a batch carries beside x (None, "labels",
  "covariates", "partial-labels"), from which the training loop builds the batches' y;
- ``given(y)``: the model given a batch's y (q(z|x,y), p(x|z,y), p(z|y)), what every
  objective and estimate runs on;
- ``training_loss(x, y, **options)``: the loss of a training batch;
- ``evaluation_extras(result, x, y, ...)``: what it reports beyond the common evaluation.

The training loop, evaluation and :class:`~vaekit.run.Run` call only these, so a new family is
added here and nowhere else (docs/architecture.md has a worked example)."""

from __future__ import annotations

from collections.abc import Sequence

from .conditional import ConditionalVAE
from .disentanglement_factor import FactorVAE
from .disentanglement_objectives import DIPVAE, AnnealedCapacityVAE, BetaTCVAE
from .model import VAE
from .semisupervised import SemiSupervisedVAE

# config model.family -> the family's class (--conditional and --semi-supervised name the
# other two)
FAMILIES: dict[str, type[VAE]] = {
    "vae": VAE,
    "conditional": ConditionalVAE,
    "semi-supervised": SemiSupervisedVAE,
    "annealed-capacity": AnnealedCapacityVAE,
    "beta-tcvae": BetaTCVAE,
    "dip-vae": DIPVAE,
    "factor-vae": FactorVAE,
}


def build_model(cfg, data_shape: Sequence[int]) -> VAE:
    """The model a resolved :class:`~vaekit.config.ModelConfig` describes, for data of
    ``data_shape``: its family's :meth:`~vaekit.model.VAE.from_config`."""
    return FAMILIES[cfg.family_name].from_config(cfg, data_shape)
