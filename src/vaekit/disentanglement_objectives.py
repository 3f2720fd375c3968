"""Objectives that aim at disentangled codes, each a model family (:mod:`vaekit.families`):

- ``annealed-capacity`` (Burgess et al. 2018): -E_q[log p(x|z)] + gamma |KL - C|, the capacity C
  rising linearly from 0 to C_max nats;
- ``beta-tcvae`` (Chen et al. 2018): the KL split into index-code mutual information, total
  correlation and dimension-wise KL, the total correlation weighted by beta;
- ``dip-vae`` (Kumar et al. 2018): -ELBO plus a penalty on the distance of a covariance of the
  codes to the identity (I: of the posterior means; II: of the aggregate posterior q(z));
- ``factor-vae`` (Kim & Mnih 2018) is in :mod:`vaekit.disentanglement_factor`.

Each trains its own loss and reports the true ELBO terms (the numbers of the metrics are those
of every other family); each refuses, rather than ignores, the options of the other objectives
(beta, KL warm-up, free bits, the IWAE bounds) and of the other families. Their options are in
the train config (``capacity_*``, ``tc_*``, ``dip_*``) and reach the model through
:meth:`~vaekit.model.VAE.prepare_training`, which the training loop calls before it trains."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch

from .disentanglement import minibatch_log_densities
from .errors import ConfigError
from .model import VAE
from .objectives import ElboSamples, ElboTerms, elbo_samples, kl_samples

# train.tc_estimator -> (z, loc, scale [M, L], dataset_size) -> (log q(z_i) [M],
# log q(z_i,l) [M, L]) (vaekit.disentanglement: minibatch weighted or stratified sampling)
TC_ESTIMATORS = {
    "mws": minibatch_log_densities,
    "mss": partial(minibatch_log_densities, stratified=True),
}


def own_objective_errors(model, train, family: str, needs: tuple[str, ...] = ()) -> str | None:
    """The rules every disentangling family shares (a one-line message or None): it trains its
    own objective, so the ELBO's beta, KL warm-up and free bits and the IWAE objectives do not
    apply; and what it ``needs``: "pathwise", to differentiate through the drawn z; "diagonal",
    a diagonal Gaussian q(z|x) of one stochastic layer; "standard-prior", p(z) = N(0, I)."""
    if (train.objective != "elbo" or train.beta != 1.0 or train.kl_warmup_epochs > 0
            or train.free_bits > 0):
        return (f"the family '{family}' trains its own objective: objective elbo, without beta, "
                "kl_warmup_epochs or free_bits (--beta, --kl-warmup, --free-bits)")
    if "pathwise" in needs and train.gradient_estimator != "reparameterization":
        return (f"the family '{family}' differentiates its loss through the drawn z: "
                "gradient_estimator reparameterization only")
    if "diagonal" in needs and (model.posterior != "gaussian" or len(model.latent_sizes) > 1):
        return (f"the family '{family}' needs a diagonal Gaussian q(z|x) of one stochastic "
                "layer: posterior gaussian and latent_dim one number")
    if "standard-prior" in needs and model.prior != "normal":
        return (f"the family '{family}' splits the KL against p(z) = N(0, I) dimension by "
                f"dimension: prior normal, not '{model.prior}'")
    return None


def trains(model: torch.nn.Module) -> bool:
    """Whether a loss computed now is a training step's: the model in training mode with
    gradients on (not a validation, nor the loop's gradient-free calls before compiling). What
    a family keeps of its training (a step count, a discriminator) moves only then."""
    return model.training and torch.is_grad_enabled()


class DisentanglingVAE(VAE):
    """The base of the disentangling families: their shared config rules (``needs``: see
    :func:`own_objective_errors`) and the refusal of other objectives' options."""

    needs: tuple[str, ...] = ()

    @classmethod
    def config_errors(cls, model, train, data) -> str | None:
        return (super().config_errors(model, train, data)
                or own_objective_errors(model, train, cls.family, cls.needs))

    def _refuse_other_objectives(self, objective, beta, free_bits, gradient_estimator) -> None:
        """The config's rule again, for callers that skip the config."""
        pathwise = "pathwise" in self.needs
        if (objective != "elbo" or float(beta) != 1.0 or free_bits > 0
                or (pathwise and gradient_estimator != "reparameterization")):
            raise ConfigError(f"the family '{self.family}' trains its own objective: objective "
                              "elbo, beta 1, no free bits"
                              + (", reparameterized gradients" if pathwise else ""))

    def _options(self, *values):
        """The options :meth:`prepare_training` set; ConfigError when it was not called."""
        if any(value is None for value in values):
            raise ConfigError(f"the family '{self.family}' takes its options from the train "
                              "config: call prepare_training(train_x, train) first (the "
                              "training loop does)")
        return values


# -- annealed capacity ----------------------------------------------------------------------

def capacity_loss(terms: ElboTerms, capacity: torch.Tensor | float,
                  gamma: float) -> torch.Tensor:
    """-mean_B E_q[log p(x|z)] + gamma |mean_B KL(q(z|x) || p(z)) - C| (Burgess et al. 2018,
    eq. 8): the KL of the batch held near C nats; where it equals C, the loss is the negative
    reconstruction term alone. ``terms``: per-example :class:`ElboTerms` ``[B]``."""
    return -terms.reconstruction.mean() + gamma * (terms.kl.mean() - capacity).abs()


class AnnealedCapacityVAE(DisentanglingVAE):
    """The family ``annealed-capacity``: :func:`capacity_loss` with the capacity
    C_t = capacity_max * min(1, t / capacity_steps) at training step t (Burgess et al. 2018).

    t is the buffer ``train_steps``: part of the weights, so a checkpoint carries it and a
    resumed run goes on with the same C; it counts the training losses computed (:func:`trains`),
    one per optimizer step of the loop (a step skipped for a non-finite loss counts too)."""

    family = "annealed-capacity"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        self.gamma = self.capacity_max = self.capacity_steps = None  # prepare_training

    def prepare_training(self, train_x: torch.Tensor, train) -> None:
        self.gamma, self.capacity_max = train.capacity_gamma, train.capacity_max
        self.capacity_steps = train.capacity_steps

    def capacity(self) -> torch.Tensor:
        """C_t in nats, a scalar tensor."""
        _, capacity_max, steps = self._options(self.gamma, self.capacity_max, self.capacity_steps)
        return capacity_max * (self.train_steps / steps).clamp(max=1.0)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                      objective: str = "elbo", beta: float = 1.0, free_bits: float = 0.0,
                      num_samples: int = 1, gradient_estimator: str = "reparameterization"
                      ) -> tuple[torch.Tensor, ElboTerms]:
        self._refuse_other_objectives(objective, beta, free_bits, gradient_estimator)
        terms = elbo_samples(self.given(y), x, num_samples, gradient_estimator).terms()
        loss = capacity_loss(terms, self.capacity(), self.gamma)
        if trains(self):
            self.train_steps += 1
        return loss, terms


# -- beta-TCVAE -----------------------------------------------------------------------------

class KLDecomposition(NamedTuple):
    """log q(z|x) - log p(z), the KL of the ELBO at a draw z ~ q(z|x), in three parts (Chen et
    al. 2018, eq. 2), each ``[..., B]``; they sum to it exactly, whatever the estimates of
    log q(z) and log q(z_l) are."""

    mutual_information: torch.Tensor  # log q(z|x) - log q(z): the index-code information
    total_correlation: torch.Tensor  # log q(z) - sum_l log q(z_l)
    dimension_kl: torch.Tensor  # sum_l log q(z_l) - log p(z)


def kl_decomposition(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                     log_qz_x: torch.Tensor, log_pz: torch.Tensor, dataset_size: int,
                     estimator: str = "mws") -> KLDecomposition:
    """The parts of log q(z|x) - log p(z) with log q(z) and log q(z_l) of the aggregate
    posterior estimated from the minibatch (``estimator``: a key of :data:`TC_ESTIMATORS`).

    ``z [..., B, L]`` draws of the diagonal Gaussians q(z|x_b) = N(loc_b, scale_b^2) (``loc,
    scale [B, L]``), ``log_qz_x``, ``log_pz [..., B]``: log q(z|x_b) and log p(z) at them;
    ``dataset_size`` N, the size of the training split. A batch of one example is estimated by
    minibatch weighted sampling whatever ``estimator`` says (stratification needs two)."""
    batch_size, latent_dim = loc.shape
    if estimator == "mss" and batch_size < 2:
        estimator = "mws"
    densities = TC_ESTIMATORS[estimator]
    flat = z.reshape(-1, batch_size, latent_dim)  # [S, B, L]: one estimate per draw of the batch
    log_qz, log_qz_marginals = zip(*(densities(z_s, loc, scale, dataset_size) for z_s in flat))
    log_qz = torch.stack(log_qz).reshape(log_qz_x.shape)
    log_prod_qz = torch.stack(log_qz_marginals).sum(-1).reshape(log_qz_x.shape)
    return KLDecomposition(log_qz_x - log_qz, log_qz - log_prod_qz, log_prod_qz - log_pz)


class BetaTCVAE(DisentanglingVAE):
    """The family ``beta-tcvae`` (Chen et al. 2018): loss = -mean_B [log p(x|z) - MI -
    tc_beta TC - dimension-wise KL] at z ~ q(z|x) (:func:`kl_decomposition`), with tc_beta = 1
    the negative ELBO with a Monte Carlo KL. The estimators need the size N of the training
    split, which :meth:`prepare_training` takes from it."""

    family = "beta-tcvae"
    needs = ("pathwise", "diagonal", "standard-prior")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tc_beta = self.tc_estimator = self.dataset_size = None  # prepare_training

    def prepare_training(self, train_x: torch.Tensor, train) -> None:
        self.tc_beta, self.tc_estimator = train.tc_beta, train.tc_estimator
        self.dataset_size = len(train_x)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                      objective: str = "elbo", beta: float = 1.0, free_bits: float = 0.0,
                      num_samples: int = 1, gradient_estimator: str = "reparameterization"
                      ) -> tuple[torch.Tensor, ElboTerms]:
        self._refuse_other_objectives(objective, beta, free_bits, gradient_estimator)
        tc_beta, estimator, size = self._options(self.tc_beta, self.tc_estimator,
                                                 self.dataset_size)
        model = self.given(y)
        q_z, p_z = model.encoder(x), model.prior()
        z = q_z.rsample((num_samples,))  # [K, B, L]
        log_px_z = model.decoder(z).log_prob(x)  # [K, B]
        parts = kl_decomposition(z, q_z.base_dist.loc, q_z.base_dist.scale, q_z.log_prob(z),
                                 p_z.log_prob(z), size, estimator)
        penalty = (parts.mutual_information + tc_beta * parts.total_correlation
                   + parts.dimension_kl)  # [K, B]
        terms = ElboSamples(log_px_z, kl_samples(q_z, p_z, z)).terms()  # the true ELBO's
        return -(log_px_z - penalty).mean(), terms


# -- DIP-VAE --------------------------------------------------------------------------------

def covariance_of_means(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Cov_p(x)[E_q(z|x) z] over the batch (1/B, the empirical distribution): ``[B, L] ->
    [L, L]``. DIP-VAE-I (Kumar et al. 2018)."""
    centred = loc - loc.mean(0)
    return centred.T @ centred / len(loc)


def covariance_of_aggregate(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Cov_q(z)[z] = E_p(x)[Cov_q(z|x)] + Cov_p(x)[E_q(z|x) z] over the batch, for diagonal
    Gaussian posteriors: ``[B, L] -> [L, L]``. DIP-VAE-II (Kumar et al. 2018)."""
    return covariance_of_means(loc, scale) + torch.diag(scale.pow(2).mean(0))


# train.dip_type -> (loc, scale [B, L]) -> the covariance [L, L] that DIP-VAE pulls towards I
DIP_COVARIANCES = {"i": covariance_of_means, "ii": covariance_of_aggregate}


def dip_penalty(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2 of a covariance ``C [L, L]``:
    0 exactly when C = I (Kumar et al. 2018, eqs. 5 and 7)."""
    diagonal = cov.diagonal()
    off_diagonal = cov - torch.diag(diagonal)
    return lambda_od * off_diagonal.pow(2).sum() + lambda_d * (diagonal - 1).pow(2).sum()


class DIPVAE(DisentanglingVAE):
    """The family ``dip-vae`` (Kumar et al. 2018): loss = -mean_B ELBO + :func:`dip_penalty` of
    the batch's covariance ``dip_type`` (:data:`DIP_COVARIANCES`), with lambda_d = 10 lambda_od
    for type i and lambda_od for type ii unless ``dip_lambda_d`` is set."""

    family = "dip-vae"
    needs = ("diagonal",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.covariance = self.lambda_od = self.lambda_d = None  # prepare_training

    def prepare_training(self, train_x: torch.Tensor, train) -> None:
        self.covariance = DIP_COVARIANCES[train.dip_type]
        self.lambda_od = train.dip_lambda_od
        self.lambda_d = train.dip_lambda_d
        if self.lambda_d is None:
            self.lambda_d = (10.0 if train.dip_type == "i" else 1.0) * self.lambda_od

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                      objective: str = "elbo", beta: float = 1.0, free_bits: float = 0.0,
                      num_samples: int = 1, gradient_estimator: str = "reparameterization"
                      ) -> tuple[torch.Tensor, ElboTerms]:
        self._refuse_other_objectives(objective, beta, free_bits, gradient_estimator)
        covariance, lambda_od, lambda_d = self._options(self.covariance, self.lambda_od,
                                                        self.lambda_d)
        model = self.given(y)
        q_z = model.encoder(x)
        terms = elbo_samples(model, x, num_samples, gradient_estimator, q_z=q_z).terms()
        cov = covariance(q_z.base_dist.loc, q_z.base_dist.scale)
        return -terms.elbo.mean() + dip_penalty(cov, lambda_od, lambda_d), terms
