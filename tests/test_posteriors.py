"""Posteriors against independent computations: full-covariance density against scipy, the
closed-form full-vs-diagonal KL against torch's Gaussian KL, flow posteriors' log q(z|x)
against the change of variables with an autograd Jacobian, and the configuration rules."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch.autograd.functional import jacobian
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from vaekit.config import ModelConfig, config_from_dict
from vaekit.errors import ConfigError
from vaekit.model import posterior_mean
from vaekit.nets import MLP
from vaekit.objectives import kl_term, training_loss
from vaekit.posteriors import (POSTERIORS, FullCovariancePosterior, IAFPosterior,
                               PlanarFlowPosterior)


def encoder(cls, latent_dim=3, data_dim=5, seed=0, **options):
    torch.manual_seed(seed)
    net = MLP((data_dim,), (cls.param_dim(latent_dim, **options),), [16])
    with torch.no_grad():  # larger outputs: off-diagonal terms and flow parameters that matter
        net.layers[-1].weight.mul_(3)
    return cls(net, latent_dim, **options)


def test_full_covariance_density_matches_scipy():
    q = encoder(FullCovariancePosterior)(torch.randn(4, 5))
    L = q.scale_tril.detach()
    assert (L.diagonal(dim1=-2, dim2=-1) > 0).all() and (L.tril(-1).abs() > 1e-3).any()
    z = q.sample((6,))  # [6, 4, 3]
    log_q = q.log_prob(z).detach().numpy()
    for b in range(4):
        cov = (L[b] @ L[b].T).numpy()
        expected = multivariate_normal(q.loc[b].detach().numpy(), cov).logpdf(z[:, b].numpy())
        np.testing.assert_allclose(log_q[:, b], expected, rtol=1e-4, atol=1e-4)


def test_full_covariance_stays_finite_on_extreme_inputs():
    q = encoder(FullCovariancePosterior)(torch.full((2, 5), 1e4))
    z = q.rsample((3,))
    assert torch.isfinite(z).all() and torch.isfinite(q.log_prob(z)).all()


def test_full_covariance_kl_is_the_monte_carlo_estimate():
    """torch has no closed-form KL(MultivariateNormal || Independent(Normal)): kl_term falls
    back to log q(z) - log p(z), whose mean matches torch's Gaussian KL formula."""
    q = encoder(FullCovariancePosterior)(torch.randn(4, 5))
    loc, scale = torch.randn(3), torch.rand(3) + 0.5
    p = Independent(Normal(loc, scale), 1)
    exact = kl_divergence(q, MultivariateNormal(loc, scale_tril=torch.diag(scale)))
    torch.manual_seed(0)
    z = q.sample((1,))
    torch.testing.assert_close(kl_term(q, p, z), q.log_prob(z)[0] - p.log_prob(z)[0])
    z = q.sample((100_000,))
    # 5 standard errors of the Monte Carlo mean
    standard_error = (q.log_prob(z) - p.log_prob(z)).std(0) / 100_000**0.5
    assert ((kl_term(q, p, z) - exact).abs() < 5 * standard_error).all()


@pytest.mark.parametrize("cls", [PlanarFlowPosterior, IAFPosterior])
def test_flow_posterior_log_density_includes_the_log_determinant(cls):
    """log q(z_K|x) = log N(z_0; loc, diag scale^2) - log|det dz_K/dz_0|, with the Jacobian of
    the whole chain of steps computed by autograd, for each of a few examples."""
    torch.set_default_dtype(torch.float64)
    try:
        post = encoder(cls, flow_steps=3).double()
        x = torch.randn(4, 5)
        q = post(x)
        z = q.rsample((2,))  # [2, 4, 3]
        log_q = q.log_prob(z)
        base = q.base_dist
        # recover z_0 by replaying the draw: same seed, same base sample
        torch.manual_seed(7)
        q2 = post(x)
        z2 = q2.rsample((2,))
        torch.manual_seed(7)
        z0 = q2.base_dist.rsample((2,))

        def chain(v, b):  # z_0 -> z_K for example b
            for t in q2.transforms:
                v = t.step(v, None if t.context is None else t.context[b])[0]
            return v

        for s in range(2):
            for b in range(4):
                J = jacobian(lambda v: chain(v, b), z0[s, b])
                expected = base.log_prob(z0)[s, b] - torch.linalg.slogdet(J).logabsdet
                torch.testing.assert_close(q2.log_prob(z2)[s, b], expected)
        assert not torch.allclose(z2, z0)  # the flow moved the samples
        assert log_q.shape == (2, 4) and torch.isfinite(log_q).all()
    finally:
        torch.set_default_dtype(torch.float32)


def test_iaf_posterior_log_density_at_any_point_uses_the_exact_inverse():
    q = encoder(IAFPosterior, flow_steps=2)(torch.randn(4, 5))
    z = q.rsample((3,))
    torch.testing.assert_close(q.log_prob(z.clone()), q.log_prob(z), atol=1e-4, rtol=1e-4)


def test_posterior_mean_falls_back_to_monte_carlo_for_flows():
    for cls in (PlanarFlowPosterior, IAFPosterior):
        q = encoder(cls)(torch.randn(4, 5))
        with pytest.raises(NotImplementedError):
            q.mean
        torch.manual_seed(0)
        mean = posterior_mean(q, num_samples=20_000)
        torch.manual_seed(1)
        other = q.sample((20_000,))
        # two independent MC estimates differ by less than 5 standard errors of their difference
        standard_error = other.std(0) * (2 / 20_000) ** 0.5
        assert ((mean - other.mean(0)).abs() < 5 * standard_error).all()


def test_free_bits_degrade_to_a_total_floor_without_a_per_dimension_kl():
    from vaekit.priors import StandardNormalPrior

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder(IAFPosterior)
            self.prior = StandardNormalPrior(3)
            self.decoder = lambda z: Independent(Normal(z.sum(-1, keepdim=True).expand(
                *z.shape[:-1], 5), 1.0), 1)

    torch.manual_seed(0)
    loss, terms = training_loss(Model(), torch.randn(8, 5), free_bits=100.0)
    # every KL is below 3 * 100 nats, so the penalty is the floor itself
    torch.testing.assert_close(loss, -terms.reconstruction.mean() + 300.0)


def test_configuration_errors_list_valid_choices():
    with pytest.raises(ConfigError, match="unknown posterior 'flows'.*gaussian, full, planar, iaf"):
        config_from_dict({"model": {"posterior": "flows"}})
    with pytest.raises(ConfigError, match="unknown prior 'vampire'.*normal, mog, vamp, flow"):
        config_from_dict({"model": {"prior": "vampire"}})
    with pytest.raises(ConfigError, match="valid posteriors with it: gaussian, full, iaf"):
        config_from_dict({"model": {"prior": "vamp", "posterior": "planar"}})
    for key in ("prior_components", "flow_steps", "flow_hidden"):
        with pytest.raises(ConfigError, match=f"model.{key}"):
            config_from_dict({"model": {key: 0}})
    assert set(POSTERIORS) == {"gaussian", "full", "planar", "iaf"}
    assert ModelConfig(prior="vamp", posterior="iaf").posterior == "iaf"


def test_cli_flags_reach_the_config(tmp_path, capsys):
    from vaekit.cli import main

    code = main(["train", "--prior", "vamp", "--posterior", "planar", "--out", str(tmp_path)])
    assert code == 2 and "valid posteriors with it" in capsys.readouterr().err
    code = main(["train", "--prior", "mog", "--prior-components", "3", "--posterior", "iaf",
                 "--flow-steps", "2", "--flow-hidden", "8", "--hidden", "16", "--latent-dim", "2",
                 "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")])
    assert code == 0
    import json
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (saved["prior"], saved["prior_components"], saved["posterior"], saved["flow_steps"],
            saved["flow_hidden"]) == ("mog", 3, "iaf", 2, 8)
