"""FactorVAE (Kim & Mnih 2018), the family ``factor-vae``: the ELBO plus gamma times a
discriminator's estimate of the total correlation of q(z),

    loss = -mean_B ELBO(x) + gamma mean_B [log D(z) - log(1 - D(z))],  z ~ q(z|x),

where D(z) is the probability that z came from q(z) rather than from prod_l q(z_l). The
discriminator is a submodule (its weights are in the model's weights and checkpoints), trained
alongside the VAE with an optimizer of its own (Adam, ``discriminator_lr``, betas (0.5, 0.9) as
in the paper) to tell draws of q(z) from their dimension-wise permutations
(:func:`permute_dims`). Its optimizer state is the family's training state
(:meth:`FactorVAE.family_state_dict`), which the checkpoint stores for exact resume; the loop's
optimizer leaves its parameters alone (:meth:`FactorVAE.optimized_parameters`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .disentanglement_objectives import DisentanglingVAE, trains
from .distributed import is_distributed
from .errors import ConfigError
from .objectives import ElboSamples, ElboTerms, kl_samples


def discriminator_net(latent_dim: int, hidden: Sequence[int] = (256, 256)) -> nn.Sequential:
    """z ``[..., L]`` -> 2 logits ``[..., 2]``, (q(z), prod_l q(z_l)): dense layers of ``hidden``
    units with LeakyReLU(0.2) as in the paper, which used 6 layers of 1000 units; 2 of 256 by
    default here, enough for the few dimensions of a disentangled code."""
    layers, width = [], latent_dim
    for units in hidden:
        layers += [nn.Linear(width, units), nn.LeakyReLU(0.2)]
        width = units
    return nn.Sequential(*layers, nn.Linear(width, 2))


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each column of ``z [B, L]`` shuffled across the batch by a permutation of its own
    (Kim & Mnih 2018, Algorithm 1): every dimension keeps its values, the rows become draws of
    prod_l q(z_l) when those of ``z`` are draws of q(z). Uses the global random state."""
    order = torch.rand(z.shape, device=z.device).argsort(dim=0)  # [B, L]: a permutation per column
    return z.gather(0, order)


def tc_estimate(logits: torch.Tensor) -> torch.Tensor:
    """log D(z) - log(1 - D(z)) = logit_0 - logit_1 per sample, with D(z) = softmax(logits)_0:
    the log density ratio q(z) / prod_l q(z_l) that an optimal discriminator recovers, whose
    mean over z ~ q(z) estimates the total correlation. ``[..., 2] -> [...]``."""
    return logits[..., 0] - logits[..., 1]


def discriminator_loss(discriminator: nn.Module, z_joint: torch.Tensor,
                       z_permuted: torch.Tensor) -> torch.Tensor:
    """(1/2) (CE(D(z_joint), 0) + CE(D(z_permuted), 1)): the mean cross-entropy of telling draws
    of q(z) (class 0) from permuted ones (class 1). ``[B, L]`` each."""
    joint, permuted = discriminator(z_joint), discriminator(z_permuted)
    return 0.5 * (F.cross_entropy(joint, joint.new_zeros(len(joint), dtype=torch.long))
                  + F.cross_entropy(permuted, permuted.new_ones(len(permuted), dtype=torch.long)))


class FactorVAE(DisentanglingVAE):
    """The family ``factor-vae``. A training loss (:func:`~vaekit.disentanglement_objectives.
    trains`) also takes one discriminator step, after the VAE's loss is computed with the
    discriminator as it was (the order of the paper's Algorithm 2): on the batch's draws z,
    detached, the first half as draws of q(z) and the second half permuted
    (:func:`permute_dims`) as draws of prod_l q(z_l), so that the two are independent as the
    paper's two minibatches are, while the VAE's loss uses the whole batch."""

    family = "factor-vae"
    needs = ("pathwise",)
    discriminator_hidden = (256, 256)
    discriminator_betas = (0.5, 0.9)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.discriminator = discriminator_net(self.latent_dim, self.discriminator_hidden)
        self.gamma = None  # prepare_training
        self.discriminator_optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict | None = None  # an optimizer state loaded before there was one

    @classmethod
    def config_errors(cls, model, train, data) -> str | None:
        error = super().config_errors(model, train, data)
        if error is None and train.compile:
            return ("the family 'factor-vae' steps its discriminator inside the loss: --compile "
                    "is not supported")
        return error

    def prepare_training(self, train_x: torch.Tensor, train) -> None:
        if is_distributed():
            raise ConfigError("the family 'factor-vae' trains its discriminator in one process: "
                              "it does not run under torchrun (several processes) yet")
        self.gamma = train.factor_gamma
        self.discriminator_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=train.discriminator_lr,
            betas=self.discriminator_betas)
        if self._pending_state is not None:
            self.load_family_state_dict(self._pending_state)

    def optimized_parameters(self):
        """Every parameter but the discriminator's, which its own optimizer trains."""
        return (p for name, p in self.named_parameters() if not name.startswith("discriminator."))

    def family_state_dict(self) -> dict | None:
        if self.discriminator_optimizer is None:
            return None
        return {"discriminator_optimizer": self.discriminator_optimizer.state_dict()}

    def load_family_state_dict(self, state: dict) -> None:
        if self.discriminator_optimizer is None:
            self._pending_state = state
            return
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self._pending_state = None

    def total_correlation(self, z: torch.Tensor) -> torch.Tensor:
        """The discriminator's TC estimate mean [log D(z) - log(1 - D(z))] over ``z [..., L]``,
        differentiable in z only: the discriminator's parameters enter as constants (copies,
        so that its step may change them before the VAE's backward pass)."""
        frozen = {name: p.detach().clone() for name, p in self.discriminator.named_parameters()}
        return tc_estimate(functional_call(self.discriminator, frozen, (z,))).mean()

    def discriminator_step(self, z: torch.Tensor) -> torch.Tensor | None:
        """One update of the discriminator on draws ``z [B, L]`` of q(z) (detached here): the
        first half against the permuted second half. Returns its loss (None for B < 2). Its
        gradients are left as None, so the loop's clipping and checks see the VAE's alone."""
        self._options(self.discriminator_optimizer)
        z, half = z.detach(), len(z) // 2
        if half == 0:
            return None
        loss = discriminator_loss(self.discriminator, z[:half], permute_dims(z[half:2 * half]))
        params = list(self.discriminator.parameters())
        for p, grad in zip(params, torch.autograd.grad(loss, params)):
            p.grad = grad
        self.discriminator_optimizer.step()
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                      objective: str = "elbo", beta: float = 1.0, free_bits: float = 0.0,
                      num_samples: int = 1, gradient_estimator: str = "reparameterization"
                      ) -> tuple[torch.Tensor, ElboTerms]:
        self._refuse_other_objectives(objective, beta, free_bits, gradient_estimator)
        (gamma,) = self._options(self.gamma)
        model = self.given(y)
        q_z, p_z = model.encoder(x), model.prior()
        z = q_z.rsample((num_samples,))  # [K, B, L]
        terms = ElboSamples(model.decoder(z).log_prob(x), kl_samples(q_z, p_z, z)).terms()
        loss = -terms.elbo.mean() + gamma * self.total_correlation(z)
        if trains(self):
            self.discriminator_step(z[0])
        return loss, terms
