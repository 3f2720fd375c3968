"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling 2014): a conditional VAE
p(x | z, y) p(z) p(y), p(y) uniform over C classes, with q(z | x, y) and a classifier q(y | x).

- A labelled example (x, y): log p(x, y) >= L(x, y) = E_q(z|x,y)[log p(x|z,y)] + log p(y)
  - KL(q(z|x,y) || p(z)).
- An unlabelled x: log p(x) >= U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)), the sum over the
  classes computed exactly (each x decoded once per class).
- The classifier also learns from the labels: J = sum_l L + sum_u U - alpha E_l[-log q(y|x)].

A training batch holds labels ``y [B]`` with -1 marking unlabelled examples (the loop appends a
batch of the labelled subset to every batch of the training set, see
:func:`labelled_subset`)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical

from .batched import batch_seed, seeded
from .conditional import ConditionalVAE
from .model import family_option_errors
from .distributed import all_reduce_sum, rank_and_world_size
from .errors import ConfigError
from .likelihoods import needs_levels
from .nets import MLP, ScaleLevels, Standardize
from .objectives import ElboTerms, elbo_samples

UNLABELLED = -1  # the label of an unlabelled example in a training batch


def classifier_net(cfg, data_shape) -> nn.Module:
    """x -> logits of q(y|x): an MLP with the model's hidden sizes (standardized input for
    real-valued data; integer levels of a discrete likelihood scaled to [0, 1] as the encoder
    sees them)."""
    net = MLP(tuple(data_shape), (cfg.num_classes,), tuple(cfg.hidden), cfg.activation)
    if needs_levels(cfg.likelihood):
        return nn.Sequential(ScaleLevels(cfg.levels), net)
    return nn.Sequential(Standardize(tuple(data_shape)), net) if cfg.standardize else net


class SemiSupervisedVAE(ConditionalVAE):
    """M2: a :class:`~vaekit.conditional.ConditionalVAE` with the classifier q(y|x) (a network
    of x returning ``Categorical(logits)``, batch ``[B]``): the family ``semi-supervised``."""

    family = "semi-supervised"

    def __init__(self, *args, classifier: nn.Module, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.classifier = classifier

    # -- the family seam (see vaekit.model.VAE) ----------------------------------------------
    @staticmethod
    def condition_kind_of(cfg, data) -> str:
        return "partial-labels"  # labels of the labelled subset, UNLABELLED for the rest

    @classmethod
    def from_config(cls, cfg, data_shape, **extra) -> SemiSupervisedVAE:
        return super().from_config(cfg, data_shape, classifier=classifier_net(cfg, data_shape),
                                   **extra)

    @classmethod
    def config_errors(cls, model, train, data) -> str | None:
        """M2's rules (collected by config validation)."""
        if data.condition_columns is not None or model.condition_dim is not None:
            return ("--condition-columns conditions on covariates, --semi-supervised classifies "
                    "class labels: use one or the other")
        if train.labels_per_class is None:
            return ("a semi-supervised model (--semi-supervised) needs --labels-per-class N "
                    "(train.labels_per_class)")
        if (train.objective != "elbo" or train.gradient_estimator != "reparameterization"
                or train.beta != 1.0 or train.free_bits > 0 or train.kl_warmup_epochs > 0):
            return ("a semi-supervised model trains the M2 bound (ELBO terms summed over the "
                    "classes): objective elbo, reparameterized, without beta, KL warm-up or "
                    "free bits")
        if model.conditional_prior != "none" and model.prior != "normal":
            return (f"conditional_prior '{model.conditional_prior}' replaces the prior p(z) by "
                    f"p(z|y); it cannot be combined with prior '{model.prior}'")
        return family_option_errors(train, cls.family)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                      objective: str = "elbo", beta: float = 1.0, free_bits: float = 0.0,
                      num_samples: int = 1, gradient_estimator: str = "reparameterization",
                      classification_weight: float = 0.0) -> tuple[torch.Tensor, ElboTerms]:
        """:func:`semi_supervised_loss` of a batch whose unlabelled examples have y = -1. M2
        trains its own bound: the options of the other objectives are refused, not ignored."""
        if (objective != "elbo" or beta != 1.0 or free_bits > 0
                or gradient_estimator != "reparameterization"):
            raise ConfigError("a semi-supervised model trains the M2 bound: objective elbo, "
                              "reparameterized gradients, beta 1, no free bits")
        return semi_supervised_loss(self, x, y=y, classification_weight=classification_weight,
                                    num_samples=num_samples)

    def evaluation_extras(self, result: dict, x: torch.Tensor, y: torch.Tensor | None, *,
                          batch_size: int, seed: int) -> dict:
        """The common result's bounds are given the true label (``*_given_label``); M2 adds the
        unlabelled bound U(x) on log p(x) (``elbo``, ``reconstruction``, ``kl``), the labelled
        bound and the classification error (:func:`evaluate_semi_supervised`)."""
        result = super().evaluation_extras(result, x, y, batch_size=batch_size, seed=seed)
        given = {f"{k}_given_label": result.pop(k) for k in ("elbo", "reconstruction", "kl")}
        return {**result, **given,
                **evaluate_semi_supervised(self, x, y.long(), batch_size=batch_size, seed=seed)}

    def classify_distribution(self, x: torch.Tensor) -> Categorical:
        """q(y | x), batch ``[B]``."""
        return Categorical(logits=self.classifier(x), validate_args=False)

    @torch.no_grad()
    def classify(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """argmax_y q(y | x) ``[N]`` (int64)."""
        device = next(self.parameters()).device
        return torch.cat([self.classifier(x[i : i + batch_size].to(device)).argmax(-1).cpu()
                          for i in range(0, len(x), batch_size)])


def labelled_bound(model: ConditionalVAE, x: torch.Tensor, y: torch.Tensor,
                   num_samples: int = 1) -> ElboTerms:
    """L(x, y) = E_q(z|x,y)[log p(x|z,y)] + log p(y) - KL(q(z|x,y) || p(z)) per example ``[B]``
    (p(y) = 1/C; the returned ``reconstruction`` and ``kl`` are the conditional ELBO's)."""
    terms = elbo_samples(model.given(y), x, num_samples).terms()
    return ElboTerms(terms.elbo - math.log(model.num_classes), terms.reconstruction, terms.kl)


def per_class_bounds(model: ConditionalVAE, x: torch.Tensor, num_samples: int = 1) -> ElboTerms:
    """L(x, y) for every class y: ``[C, B]`` terms (x decoded once per class, in one batch)."""
    num_classes, batch = model.num_classes, len(x)
    labels = torch.arange(num_classes, device=x.device).repeat_interleave(batch)  # [C * B]
    x_all = x.repeat(num_classes, *([1] * (x.dim() - 1)))
    terms = labelled_bound(model, x_all, labels, num_samples)
    return ElboTerms(*(t.view(num_classes, batch) for t in terms))


def unlabelled_bound(model: SemiSupervisedVAE, x: torch.Tensor, num_samples: int = 1
                     ) -> tuple[torch.Tensor, Categorical, ElboTerms]:
    """U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)) per example ``[B]``, the sum exact over the
    classes (Kingma et al. 2014, eq. 7); also q(y|x) and the per-class terms ``[C, B]``."""
    q_y = model.classify_distribution(x)
    per_class = per_class_bounds(model, x, num_samples)
    probs = q_y.probs.transpose(0, 1)  # [C, B]
    return (probs * per_class.elbo).sum(0) + q_y.entropy(), q_y, per_class


def semi_supervised_loss(model: SemiSupervisedVAE, x: torch.Tensor, *, y: torch.Tensor,
                         classification_weight: float, num_samples: int = 1
                         ) -> tuple[torch.Tensor, ElboTerms]:
    """loss = -[mean_u U(x) + mean_l L(x, y)] + alpha mean_l -log q(y|x) over a batch whose
    unlabelled examples have ``y = -1``: the M2 objective J^alpha per example, the labelled and
    unlabelled parts each averaged over their own examples. Returns the loss and, for
    reporting, per-example terms: L(x, y) for labelled examples, U(x) for unlabelled ones (its
    reconstruction and KL the q(y|x)-weighted ones).

    Under DDP the means are over the step's examples on all ranks: each rank's batch holds a
    different number of labelled examples, so the average of per-rank means (what DDP's
    gradient averaging would make of them) is not the mean of the whole step. Each rank divides
    its sums by the counts over all ranks and multiplies by the world size, so that DDP's
    average over ranks is exactly the one-process loss of the combined batch."""
    labelled = y >= 0
    # float even for integer-level data (uint8 x)
    loss = torch.zeros((), dtype=torch.get_default_dtype(), device=x.device)
    counts = all_reduce_sum(torch.stack([labelled.sum(), (~labelled).sum()]).to(loss.dtype))
    share = rank_and_world_size()[1] / counts.clamp(min=1)  # [labelled, unlabelled]
    elbo, reconstruction, kl = (loss.new_zeros(len(x)) for _ in range(3))
    if bool(labelled.any()):
        x_l, y_l = x[labelled], y[labelled]
        terms = labelled_bound(model, x_l, y_l, num_samples)
        cross_entropy = -model.classify_distribution(x_l).log_prob(y_l)
        loss = loss + share[0] * (classification_weight * cross_entropy - terms.elbo).sum()
        elbo[labelled], reconstruction[labelled], kl[labelled] = terms
    if bool((~labelled).any()):
        bound, q_y, per_class = unlabelled_bound(model, x[~labelled], num_samples)
        loss = loss - share[1] * bound.sum()
        probs = q_y.probs.transpose(0, 1).detach()
        elbo[~labelled] = bound
        reconstruction[~labelled] = (probs * per_class.reconstruction).sum(0)
        kl[~labelled] = (probs * per_class.kl).sum(0)
    return loss, ElboTerms(elbo, reconstruction, kl)


def default_classification_weight(num_train: int, num_labelled: int) -> float:
    """alpha = 0.1 N / N_l for the per-batch mean classification loss: the paper's alpha =
    0.1 N in J^alpha = sum L + sum U + alpha E_l[-log q(y|x)], per labelled example relative to
    its own bound L(x, y) (the labelled batch's bound has weight 1 per example)."""
    return 0.1 * num_train / max(num_labelled, 1)


def labelled_subset(labels: torch.Tensor, per_class: int, num_classes: int, seed: int
                    ) -> torch.Tensor:
    """The indices (sorted, ``[C * per_class]``) of ``per_class`` training examples of each
    class, drawn with a generator seeded by ``seed``: the labelled examples of a
    semi-supervised run (balanced; the same for the same seed and labels)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            raise ConfigError(f"--labels-per-class {per_class}: class {c} has only "
                              f"{len(members)} training examples")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


@torch.no_grad()
def evaluate_semi_supervised(model: SemiSupervisedVAE, x: torch.Tensor, labels: torch.Tensor, *,
                             batch_size: int = 1000, seed: int = 0) -> dict:
    """The unlabelled bound U(x) on log p(x) (``elbo``), the labelled bound L(x, y) on
    log p(x, y) with the true labels (``elbo_labelled``) and the classification error of
    argmax_y q(y|x) (``classification_error``, a fraction), means over ``x [N, ...]``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(5, dtype=torch.float64)
    for b, start in enumerate(range(0, len(x), batch_size)):
        xb = x[start : start + batch_size].to(device)
        yb = labels[start : start + batch_size].to(device)
        with seeded(batch_seed(seed, b), device):
            bound, q_y, per_class = unlabelled_bound(model, xb)
            probs = q_y.probs.transpose(0, 1)
            rows = per_class.elbo.gather(0, yb[None]).squeeze(0)  # L(x, y_true)
            sums += torch.stack([bound.sum(), (probs * per_class.reconstruction).sum(),
                                 (probs * per_class.kl).sum(), rows.sum(),
                                 (q_y.probs.argmax(-1) != yb).sum()]).double().cpu()
    model.train(was_training)
    n = max(len(x), 1)
    return {"elbo": float(sums[0] / n), "reconstruction": float(sums[1] / n),
            "kl": float(sums[2] / n), "elbo_labelled": float(sums[3] / n),
            "classification_error": float(sums[4] / n), "num_examples": len(x)}
