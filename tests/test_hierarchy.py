"""Several stochastic layers against closed forms: a two-layer linear-Gaussian model

    z2 ~ N(0, I),  z1 | z2 ~ N(A z2 + a, diag(s1^2)),  x | z1 ~ N(W z1 + b, s^2 I)

has the exact marginal p(x) = N(W a + b, W (A A^T + diag(s1^2)) W^T + s^2 I) and a Gaussian
posterior that both inference variants can represent exactly (top-down when W^T W is
diagonal, bottom-up with one unit per layer); plus per-layer KLs and active units, every prior
with one and two layers, DReG's detached posterior, and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaekit.config import ModelConfig, load_config_file, resolve
from vaekit.data import dataset_defaults
from vaekit.evaluation import evaluate_elbo, kl_per_layer, latent_diagnostics, log_likelihood
from vaekit.hierarchy import (BottomUpPosterior, HierarchicalPrior, TakeBottomLayer,
                              TopDownPosterior)
from vaekit.likelihoods import GaussianLikelihood
from vaekit.families import build_model
from vaekit.model import VAE
from vaekit.objectives import detached, elbo_terms, training_loss
from vaekit.priors import PRIORS, StandardNormalPrior



def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def float64():
    """Closed forms are compared in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def linear(in_dim: int, out_dim: int, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


class TwoLayerLinearGaussian:
    """The model's parameters, its exact p(x) and exact posterior moments."""

    def __init__(self, L1: int, L2: int, D: int, orthogonal_columns: bool, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.L1, self.L2, self.D = L1, L2, D
        self.A = torch.randn(L1, L2, generator=g)
        self.a = torch.randn(L1, generator=g)
        self.s1 = 0.5 + torch.rand(L1, generator=g)
        W = torch.randn(D, L1, generator=g)
        if orthogonal_columns:  # W^T W diagonal: Q R with R's diagonal only
            Q, _ = torch.linalg.qr(W)
            W = Q * (1.0 + torch.arange(L1))
        self.W, self.b, self.s = W, torch.randn(D, generator=g), 0.6
        self.C11 = self.A @ self.A.T + torch.diag(self.s1**2)  # Cov(z1)
        self.cov_x = self.W @ self.C11 @ self.W.T + self.s**2 * torch.eye(D)
        self.mean_x = self.W @ self.a + self.b

    def marginal(self) -> MultivariateNormal:
        return MultivariateNormal(self.mean_x, self.cov_x)

    def posterior_z2(self):
        """p(z2 | x) = N(M2 (x - mean_x), v2): M2 = A^T W^T cov_x^-1."""
        M2 = self.A.T @ self.W.T @ torch.linalg.inv(self.cov_x)
        return M2, torch.eye(self.L2) - M2 @ self.W @ self.A

    def decoder(self) -> GaussianLikelihood:
        net = nn.Sequential(TakeBottomLayer(self.L1),
                            linear(self.L1, self.D, self.W, self.b))
        return GaussianLikelihood(net, (self.D,), "fixed", self.s)

    def prior(self) -> HierarchicalPrior:
        down = nn.ModuleList([linear(self.L2, 2 * self.L1,
                                     torch.cat([self.A, torch.zeros(self.L1, self.L2)]),
                                     torch.cat([self.a, 2 * self.s1.log()]))])
        return HierarchicalPrior(StandardNormalPrior(self.L2), down, (self.L1, self.L2))

    def top_down_model(self, shift: float = 0.0) -> VAE:
        """The exact posterior as a top-down one (needs W^T W diagonal and L2 = 1): the upward
        estimate of z1 is the least-squares N((W^T W)^-1 W^T (x - b), s^2 / diag(W^T W)) and
        q(z2 | x) = p(z2 | x), a linear function of it. ``shift`` moves q(z2|x) off."""
        G = self.W.T @ self.W
        G_inv = torch.diag(1 / G.diagonal())
        bottom = linear(self.D, 2 * self.L1,
                        torch.cat([G_inv @ self.W.T, torch.zeros(self.L1, self.D)]),
                        torch.cat([-G_inv @ self.W.T @ self.b,
                                   (self.s**2 / G.diagonal()).log()]))
        M2, v2 = self.posterior_z2()
        # E[z2|x] = M2 (x - mean_x) with x - b = W m_hat + (the part W^T ignores), so
        # M2 (x - mean_x) = M2 W m_hat - M2 W a when M2 = K W^T: K = A^T (G C11 + s^2 I)^-1
        K = self.A.T @ torch.linalg.inv(G @ self.C11 + self.s**2 * torch.eye(self.L1))
        up = nn.ModuleList([linear(2 * self.L1, 2 * self.L2,
                                   torch.cat([torch.cat([K @ G, torch.zeros(self.L2, self.L1)], 1),
                                              torch.zeros(self.L2, 2 * self.L1)]),
                                   torch.cat([-K @ G @ self.a + shift, v2.diagonal().log()]))])
        prior = self.prior()
        posterior = TopDownPosterior(bottom, up, (self.L1, self.L2), generative=prior)
        return VAE(posterior, self.decoder(), prior, (self.D,))

    def bottom_up_model(self, shift: float = 0.0) -> VAE:
        """The exact posterior p(z1|x) p(z2|z1) as a bottom-up one (one unit per layer, so
        every Gaussian is diagonal); ``shift`` moves q(z1|x) off."""
        assert self.L1 == 1 and self.L2 == 1
        K1 = self.C11 @ self.W.T @ torch.linalg.inv(self.cov_x)  # E[z1|x] = a + K1 (x - mean_x)
        v1 = self.C11 - K1 @ self.W @ self.C11
        bottom = linear(self.D, 2, torch.cat([K1, torch.zeros(1, self.D)]),
                        torch.cat([self.a - K1 @ self.mean_x + shift, v1.diagonal().log()]))
        # p(z2 | z1) = N(c z1 + d, u): c = A / C11, d = -c a, u = 1 - A^2 / C11
        c = self.A / self.C11
        up = nn.ModuleList([linear(1, 2, torch.cat([c, torch.zeros(1, 1)]),
                                   torch.cat([-(c @ self.a), (1 - self.A**2 / self.C11)[0].log()]))])
        posterior = BottomUpPosterior(bottom, up, (1, 1))
        return VAE(posterior, self.decoder(), self.prior(), (self.D,))


@pytest.fixture
def lg_top_down(float64):
    return TwoLayerLinearGaussian(L1=2, L2=1, D=4, orthogonal_columns=True)


@pytest.fixture
def lg_bottom_up(float64):
    return TwoLayerLinearGaussian(L1=1, L2=1, D=3, orthogonal_columns=False, seed=1)


@pytest.mark.parametrize("variant", ["top-down", "bottom-up"])
def test_with_the_exact_posterior_every_draws_elbo_is_log_px(variant, lg_top_down, lg_bottom_up):
    lg = lg_top_down if variant == "top-down" else lg_bottom_up
    model = lg.top_down_model() if variant == "top-down" else lg.bottom_up_model()
    x = lg.marginal().sample((50,))
    exact = lg.marginal().log_prob(x)
    torch.manual_seed(0)
    terms = elbo_terms(model, x, num_samples=3)  # log w is the same at every z: no MC error
    torch.testing.assert_close(terms.elbo, exact, rtol=0, atol=1e-8)
    torch.testing.assert_close(log_likelihood(model, x, 7), exact, rtol=0, atol=1e-8)


@pytest.mark.parametrize("variant", ["top-down", "bottom-up"])
def test_an_off_posterior_bounds_log_px_and_importance_sampling_closes_the_gap(
        variant, lg_top_down, lg_bottom_up):
    lg = lg_top_down if variant == "top-down" else lg_bottom_up
    model = lg.top_down_model(shift=0.3) if variant == "top-down" else lg.bottom_up_model(shift=0.3)
    x = lg.marginal().sample((100,))
    exact = lg.marginal().log_prob(x).mean()
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = elbo_terms(model, x, num_samples=100).elbo.mean()
    gaps = {k: float(exact - log_likelihood(model, x, k).mean()) for k in (1, 20, 500)}
    assert float(exact - elbo) > 0.1  # the ELBO is below log p(x) by a visible margin
    assert gaps[1] > 0.1 and gaps[1] > gaps[20] > gaps[500]  # IS climbs towards log p(x) ...
    assert abs(gaps[500]) < 0.02  # ... and reaches it (within its noise)


def test_per_layer_kls_match_their_closed_forms_and_sum_to_the_kl(lg_top_down):
    lg = lg_top_down
    model = lg.top_down_model(shift=0.5)
    x = lg.marginal().sample((4,))
    q_z, p_z = model.encoder(x), model.prior()
    torch.manual_seed(0)
    kl = kl_per_layer(q_z, p_z, num_samples=200_000)  # [2, B]
    # top: KL(q(z2|x) || N(0, 1)) in closed form
    q2 = q_z.first.base_dist
    kl2 = kl_divergence(q2, Normal(0.0, 1.0)).sum(-1)
    # bottom: E_q(z2)[KL(q(z1|z2,x) || p(z1|z2))]; both means are linear in z2, so with
    # delta(z2) = (B - A) z2 + (c - a): E[delta^2] = ((B - A) m2 + c - a)^2 + (B - A)^2 v2
    z2 = torch.zeros(1, len(x), 1)
    q1_at0 = q_z.conditionals[0](z2).base_dist
    q1_at1 = q_z.conditionals[0](z2 + 1).base_dist
    B_minus_A = (q1_at1.loc - q1_at0.loc) - lg.A[:, 0]  # [1, B, L1]
    c_minus_a = q1_at0.loc - lg.a
    m2, v2 = q2.loc[..., 0, None], q2.scale[..., 0, None] ** 2
    mean_sq = (B_minus_A * m2 + c_minus_a) ** 2 + B_minus_A**2 * v2
    var_q, var_p = q1_at0.scale**2, lg.s1**2
    kl1 = 0.5 * (var_p.log() - var_q.log() + (var_q + mean_sq) / var_p - 1).sum(-1)[0]
    torch.testing.assert_close(kl[1], kl2, rtol=0, atol=0.01)
    torch.testing.assert_close(kl[0], kl1, rtol=0, atol=0.02)
    torch.manual_seed(1)
    z = q_z.sample((3,))
    total = q_z.log_prob(z) - p_z.log_prob(z)
    per_layer = [lq - lp for lq, lp in zip(q_z.log_prob_layers(z), p_z.log_prob_layers(z))]
    torch.testing.assert_close(sum(per_layer), total)


def test_active_units_per_layer_find_exactly_the_live_units():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(32,), latent_dim=(6, 4), inference="bottom-up",
                      likelihood="bernoulli", standardize=False, activation="tanh")
    model = build_model(cfg, (16,))
    dead1, dead2 = [1, 4], [0]
    with torch.no_grad():
        head1 = model.encoder.bottom_net.layers[-1]
        head2 = model.encoder.up_nets[0].layers[-1]
        head1.weight.mul_(5)
        head2.weight.mul_(20)
        for head, dead in ((head1, dead1), (head2, dead2)):
            head.weight[dead] = 0
            head.bias[dead] = 0.3
    x = torch.rand(400, 16).round()
    diagnostics = latent_diagnostics(model, x)
    variance = torch.tensor(diagnostics["posterior_mean_variance"]).split((6, 4))
    assert diagnostics["active_units_per_layer"] == [4, 3]
    assert diagnostics["active_units"] == 7
    assert all(float(variance[0][u]) == 0 for u in dead1) and float(variance[1][0]) < 1e-3
    assert len(diagnostics["kl_per_layer"]) == 2


@pytest.mark.parametrize("prior", list(PRIORS))
@pytest.mark.parametrize("latent, inference", [(3, "top-down"), ((4, 2), "top-down"),
                                                ((4, 3, 2), "bottom-up")])
def test_every_prior_trains_a_step_and_evaluates_a_finite_log_px(prior, latent, inference):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(16,), latent_dim=latent, inference=inference, prior=prior,
                      prior_components=3, likelihood="bernoulli", standardize=False,
                      flow_steps=2, flow_hidden=8)
    model = build_model(cfg, (1, 4, 4))
    x = torch.rand(6, 1, 4, 4).round()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for objective in ("elbo", "iwae", "iwae-dreg"):
        loss, _ = training_loss(model, x, objective=objective, num_samples=2)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
    log_px = log_likelihood(model, x, 20)
    assert torch.isfinite(log_px).all() and (log_px < 0).all()
    samples = model.sample(5)  # ancestral sampling from the prior (mixtures have no rsample)
    assert samples.shape == (5, 1, 4, 4) and torch.isfinite(samples).all()
    assert evaluate_elbo(model, x)["elbo"] <= float(log_px.mean()) + 1.0


@pytest.mark.parametrize("inference", ["top-down", "bottom-up"])
def test_dreg_sees_log_q_through_z_only(inference):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(8,), latent_dim=(3, 2), inference=inference,
                      likelihood="bernoulli", standardize=False)
    model = build_model(cfg, (5,))
    x = torch.rand(4, 5).round()
    q_z = model.encoder(x)
    z = q_z.sample((2,))
    frozen = detached(q_z)
    torch.testing.assert_close(frozen.log_prob(z), q_z.log_prob(z))
    assert not frozen.log_prob(z).requires_grad  # no parameter reaches it ...
    z_grad = z.clone().requires_grad_()
    (grad,) = torch.autograd.grad(frozen.log_prob(z_grad).sum(), z_grad)
    assert grad[..., :3].abs().sum() > 0 and grad[..., 3:].abs().sum() > 0  # ... z does


def test_decoding_a_top_code_runs_the_generative_means_down():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(8,), latent_dim=(3, 2), likelihood="bernoulli", standardize=False)
    model = build_model(cfg, (5,))
    z2 = torch.randn(7, 2)
    z1 = model.prior.conditional(0)(z2).mean
    expected = model.decoder(torch.cat([z1, torch.randn(7, 2)], -1)).mean  # reads z1 only
    torch.testing.assert_close(model.decode_codes(z2).mean, expected)
    assert model.codes(torch.rand(4, 5), layer=1).shape == (4, 3)
    assert model.latent_dims == (3, 2) and model.latent_dim == 5


def test_the_command_line_trains_evaluates_and_encodes_a_two_layer_model(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--latent-dim", "6,3", "--hidden", "32", "--epochs", "1", "--out", str(out),
                   "--no-progress").returncode == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["latent_dim"] == [6, 3]
    result = run_cli("evaluate", str(out), "--json", "--num-samples", "5", "--no-progress")
    evaluation = json.loads(result.stdout)
    assert len(evaluation["kl_per_layer"]) == 2 and len(evaluation["active_units_per_layer"]) == 2
    assert math.isfinite(evaluation["log_likelihood"])
    assert run_cli("report", str(out)).returncode == 0  # the report shows the layers' numbers
    page = (out / "report.html").read_text()
    assert "test KL per layer" in page and "active units per layer" in page and "6+3" in page
    assert run_cli("encode", str(out), "--layer", "1", "--out", str(tmp_path / "z1.npy")
                   ).returncode == 0
    bad = run_cli("encode", str(out), "--layer", "3", "--out", str(tmp_path / "z3.npy"))
    assert bad.returncode == 2 and "layer 3 does not exist" in bad.stderr
    assert not (tmp_path / "z3.npy").exists()


def test_several_layers_refuse_a_one_layer_posterior(tmp_path):
    result = run_cli("train", "--latent-dim", "6,3", "--posterior", "iaf", "--out",
                     str(tmp_path / "r"))
    assert result.returncode == 2 and "--inference" in result.stderr
    assert not (tmp_path / "r").exists()


PRESETS = Path(__file__).resolve().parents[1] / "presets"


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.toml")))
def test_every_preset_loads_and_builds(preset):
    config = load_config_file(PRESETS / preset)
    resolved = resolve(config, defaults=dataset_defaults(config.data.name), value_kind="unit")
    model = build_model(resolved.model, (1, 28, 28))
    if preset.startswith("iwae-paper") and "2layer" in preset:
        # 784-200-200-100(z1)-100-100-50(z2), bottom-up as in the paper
        assert model.latent_dims == (100, 50)
        assert isinstance(model.encoder, BottomUpPosterior)
        assert [m.out_features for m in model.encoder.modules() if isinstance(m, nn.Linear)] \
            == [200, 200, 200, 100, 100, 100]


def test_the_reproduction_script_names_every_row_and_refuses_bad_options(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "reproduce", Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)
    assert all((PRESETS / preset).is_file() for preset, _, _ in reproduce.ROWS.values())
    out = tmp_path / "row"
    assert reproduce.main(["vae-2layer", "--batch-size", "0", "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("inference", ["top-down", "bottom-up"])
def test_a_convolutional_bottom_layer_trains_under_two_stochastic_layers(inference):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="conv", latent_dim=(6, 3), inference=inference, conv_channels=4,
                      conv_hidden=16, likelihood="bernoulli", standardize=False)
    model = build_model(cfg, (1, 12, 12))
    x = torch.rand(4, 1, 12, 12).round()
    loss, _ = training_loss(model, x, objective="iwae-dreg", num_samples=2)
    loss.backward()
    assert model.encoder.bottom_net.__class__.__name__ == "ConvEncoderNet"
    assert torch.isfinite(log_likelihood(model, x, 10)).all()


def test_a_decoder_reading_every_layer_matches_its_closed_form_log_px(float64):
    """p(x | z1, z2) = N(W1 z1 + W2 z2 + b, s^2 I) under z2 ~ N(0, 1), z1 | z2 ~ N(A z2 + a, s1^2)
    (the skip connections of --skip-decoder): with z = [z1, z2], p(x) = N(W1 a + b,
    W Cov(z) W^T + s^2 I). An approximate bottom-up posterior's importance-sampled log p(x)
    must reach it; one that dropped z2 from the decoder would miss it by the margin checked."""
    g = torch.Generator().manual_seed(3)
    D, A, a, s1 = 3, torch.tensor([[1.2]]), torch.tensor([0.4]), torch.tensor([0.7])
    W = torch.randn(D, 2, generator=g)
    b, s = torch.randn(D, generator=g), 0.5
    cov_z = torch.tensor([[A[0, 0] ** 2 + s1[0] ** 2, A[0, 0]], [A[0, 0], 1.0]])
    mean_z = torch.tensor([a[0], 0.0])
    marginal = MultivariateNormal(W @ mean_z + b, W @ cov_z @ W.T + s**2 * torch.eye(D))
    without_z2 = MultivariateNormal(W[:, :1] @ a + b,
                                    W[:, :1] * cov_z[0, 0] @ W[:, :1].T + s**2 * torch.eye(D))
    x = marginal.sample((200,))
    assert float((marginal.log_prob(x) - without_z2.log_prob(x)).abs().mean()) > 0.1
    # q(z1|x) = p(z1|x) with its variance inflated; q(z2|z1) = p(z2|z1) (it ignores x: off)
    cov_x = marginal.covariance_matrix
    K1 = (cov_z @ W.T @ torch.linalg.inv(cov_x))[:1]
    v1 = cov_z[0, 0] - (K1 @ W @ cov_z[:, :1])[0, 0]
    bottom = linear(D, 2, torch.cat([K1, torch.zeros(1, D)]),
                    torch.cat([a - K1 @ marginal.loc, (1.5 * v1).log().reshape(1)]))
    c = A[0, 0] / cov_z[0, 0]
    up = nn.ModuleList([linear(1, 2, torch.tensor([[c], [0.0]]),
                               torch.stack([-c * a[0], (1.3 * (1 - A[0, 0] * c)).log()]))])
    posterior = BottomUpPosterior(bottom, up, (1, 1))
    down = nn.ModuleList([linear(1, 2, torch.cat([A, torch.zeros(1, 1)]),
                                 torch.cat([a, 2 * s1.log()]))])
    prior = HierarchicalPrior(StandardNormalPrior(1), down, (1, 1))
    decoder = GaussianLikelihood(linear(2, D, W, b), (D,), "fixed", s)  # reads [z1, z2]
    model = VAE(posterior, decoder, prior, (D,))
    torch.manual_seed(0)
    exact = marginal.log_prob(x).mean()
    with torch.no_grad():
        elbo = elbo_terms(model, x, num_samples=50).elbo.mean()
    assert float(exact - elbo) > 0.05
    assert abs(float(log_likelihood(model, x, 2000).mean() - exact)) < 0.02


def test_the_skip_decoder_option_builds_a_decoder_of_every_layer_and_needs_several():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(8,), latent_dim=(3, 2), likelihood="bernoulli", standardize=False,
                      skip_decoder=True, inference="top-down")
    model = build_model(cfg, (5,))
    first = next(m for m in model.decoder.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 5  # z1 and z2
    z2 = torch.randn(7, 2)
    z1 = model.prior.conditional(0)(z2).mean
    torch.testing.assert_close(model.decode_codes(z2).mean,
                               model.decoder(torch.cat([z1, z2], -1)).mean)
    with pytest.raises(ValueError, match="comma list"):
        ModelConfig(latent_dim=4, skip_decoder=True)
