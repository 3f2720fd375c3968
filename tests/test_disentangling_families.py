"""The disentangling objectives as model families (vaekit.disentanglement_objectives,
vaekit.disentanglement_factor): each trains through the one loop, evaluates through the one
evaluation path and resumes exactly (FactorVAE with its discriminator and the discriminator's
optimizer); their losses against independent computations and closed forms; their options are
refused by the families they do not belong to."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from torch.distributions import Independent, Normal

import vaekit
from vaekit.cli_options import add_train_options, overrides
from vaekit.config import config_from_dict
from vaekit.disentanglement_factor import (
    FactorVAE,
    discriminator_loss,
    permute_dims,
    tc_estimate,
)
from vaekit.disentanglement_objectives import (
    DIPVAE,
    AnnealedCapacityVAE,
    BetaTCVAE,
    capacity_loss,
    covariance_of_aggregate,
    covariance_of_means,
    dip_penalty,
    kl_decomposition,
)
from vaekit.errors import ConfigError
from vaekit.families import FAMILIES, build_model
from vaekit.objectives import ElboTerms, elbo_terms
from vaekit.storage import load_tensors, unflatten_state
from vaekit.training import Trainer

QUIET = {"progress": False, "log": lambda m: None, "callbacks": []}
NEW_FAMILIES = ("annealed-capacity", "beta-tcvae", "dip-vae", "factor-vae")
# an option of each family away from its default, so that the run shows it reached the loss
OPTIONS = {"annealed-capacity": {"capacity_max": 5.0, "capacity_steps": 30},
           "beta-tcvae": {"tc_estimator": "mss", "tc_beta": 3.0},
           "dip-vae": {"dip_type": "ii", "dip_lambda_od": 2.0},
           "factor-vae": {"factor_gamma": 10.0, "discriminator_lr": 1e-3}}


def digits_config(family: str, epochs: int, **train):
    return config_from_dict({"model": {"family": family, "hidden": [16], "latent_dim": 3},
                             "train": {"epochs": epochs, "batch_size": 64, "report": False,
                                       **OPTIONS[family], **train}})


def small_model(family: str, data_dim: int = 6, latent_dim: int = 2, **train):
    """A family's model for data [B, data_dim] in [0, 1], prepared with ``train`` options."""
    config = config_from_dict({"model": {"family": family, "hidden": [8],
                                         "latent_dim": latent_dim, "likelihood": "bernoulli"},
                               "train": train})
    model = build_model(config.model, (data_dim,))
    model.prepare_training(torch.zeros(200, data_dim), config.train)
    return model


# -- the loop, the evaluation path, exact resume -------------------------------------------------

@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_each_family_trains_evaluates_and_resumes_exactly(family, tmp_path):
    """Two epochs straight against one epoch, stopped, and a resumed second: the same weights
    and buffers (the capacity's step count, the discriminator), the same history, and for
    FactorVAE the same discriminator optimizer state; then the common evaluation of the run."""
    full = Trainer(digits_config(family, 2), tmp_path / "full", **QUIET)
    full.fit()
    Trainer(digits_config(family, 1), tmp_path / "part", **QUIET).fit()
    resumed = Trainer(digits_config(family, 2), tmp_path / "part", resume=True, **QUIET)
    assert resumed.resumed and resumed.epoch == 1
    resumed.fit()
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        torch.testing.assert_close(value, resumed_state[key], rtol=0, atol=0, msg=key)
    timeless = [[{k: v for k, v in record.items() if k not in ("seconds", "images_per_second")}
                 for record in history] for history in (full.history, resumed.history)]
    assert timeless[0] == timeless[1]

    model, steps = full.model, full.step
    assert steps == 2 * len(full.batches)
    if family == "annealed-capacity":  # the step count reached the loss: C is at its maximum
        assert int(model.train_steps) == steps and float(model.capacity()) == 5.0
    if family == "beta-tcvae":
        assert model.dataset_size == len(full.data.train) and model.tc_estimator == "mss"
    if family == "dip-vae":
        assert (model.lambda_od, model.lambda_d) == (2.0, 2.0)  # type ii: lambda_d = lambda_od
    if family == "factor-vae":
        a = full.model.discriminator_optimizer.state_dict()
        b = resumed.model.discriminator_optimizer.state_dict()
        groups = [[{**group, "betas": tuple(group["betas"])} for group in state["param_groups"]]
                  for state in (a, b)]  # (a checkpoint stores tuples as lists)
        assert groups[0] == groups[1] and a["state"].keys() == b["state"].keys()
        assert int(a["state"][0]["step"]) == steps
        for index, entry in a["state"].items():
            for name in ("step", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(entry[name], b["state"][index][name], rtol=0, atol=0)
        tensors, meta = load_tensors(tmp_path / "part" / "checkpoint.safetensors")
        saved = unflatten_state(meta["state"], tensors)["parts"]["family"]
        torch.testing.assert_close(saved["discriminator_optimizer"]["state"][0]["exp_avg"],
                                   b["state"][0]["exp_avg"], rtol=0, atol=0)
        # the loop's optimizer holds every parameter but the discriminator's
        held = {id(p) for group in full.optimizer.param_groups for p in group["params"]}
        assert not held & {id(p) for p in model.discriminator.parameters()}
        assert held == {id(p) for n, p in model.named_parameters()
                        if not n.startswith("discriminator.")}

    run = vaekit.load(tmp_path / "full")
    assert type(run.model) is FAMILIES[family]
    result = run.evaluate(num_samples=3)
    for key in ("elbo", "log_likelihood", "bits_per_dim", "active_units"):
        assert math.isfinite(result[key]), key
    assert result["log_likelihood"] >= result["elbo"] - 1.0  # IS with K = 3 against the bound


def test_the_family_part_of_the_checkpoint_survives_a_fresh_model_without_an_optimizer(tmp_path):
    """The hook's order does not matter: a state loaded before prepare_training is kept and
    applied when the discriminator's optimizer is made."""
    model = small_model("factor-vae", discriminator_lr=1e-3)
    x = torch.rand(32, 6).round()
    model.training_loss(x)[0].backward()
    state = model.family_state_dict()
    other = build_model(config_from_dict({"model": {"family": "factor-vae", "hidden": [8],
                                                    "latent_dim": 2,
                                                    "likelihood": "bernoulli"}}).model, (6,))
    other.load_state_dict(model.state_dict())
    other.load_family_state_dict(state)
    other.prepare_training(x, config_from_dict({"model": {"family": "factor-vae"},
                                                "train": {"discriminator_lr": 1e-3}}).train)
    loaded = other.discriminator_optimizer.state_dict()
    assert int(loaded["state"][0]["step"]) == 1
    torch.testing.assert_close(loaded["state"][0]["exp_avg"],
                               state["discriminator_optimizer"]["state"][0]["exp_avg"])


# -- annealed capacity ------------------------------------------------------------------------

def test_capacity_loss_is_the_negative_reconstruction_where_the_kl_equals_the_capacity():
    reconstruction, kl = torch.tensor([-10.0, -14.0]), torch.tensor([2.0, 4.0])
    terms = ElboTerms(reconstruction - kl, reconstruction, kl)
    assert float(capacity_loss(terms, 3.0, 1000.0)) == 12.0
    assert float(capacity_loss(terms, 1.0, 1000.0)) == pytest.approx(12.0 + 2000.0)
    assert float(capacity_loss(terms, 3.5, 10.0)) == pytest.approx(12.0 + 5.0)


def test_the_capacity_rises_with_the_training_steps_only():
    model = small_model("annealed-capacity", capacity_max=25.0, capacity_steps=4)
    x = torch.rand(16, 6).round()
    seen = []
    for _ in range(6):
        seen.append(float(model.capacity()))
        model.training_loss(x)
    assert seen == [0.0, 6.25, 12.5, 18.75, 25.0, 25.0]
    with torch.no_grad():  # the loop's gradient-free calls (before compiling) do not count
        model.training_loss(x)
    model.eval()
    model.training_loss(x)
    assert int(model.train_steps) == 6
    torch.manual_seed(3)  # the loss against the formula at the current C, same draws
    loss, _ = model.training_loss(x)
    torch.manual_seed(3)
    with torch.no_grad():
        again = elbo_terms(model, x)
    assert float(loss.detach()) == pytest.approx(float(-again.reconstruction.mean()
                                              + 1000.0 * (again.kl.mean() - 25.0).abs()))


# -- beta-TCVAE -------------------------------------------------------------------------------

def _posteriors(batch: int, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    scale = 0.3 + torch.rand(batch, dim, generator=generator, dtype=torch.float64)
    q_z = Independent(Normal(loc, scale), 1)
    z = q_z.sample((2,))  # [K, B, L]
    return loc, scale, q_z, z


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_mi_tc_and_dimension_wise_kl_sum_to_the_kl_at_each_draw(estimator):
    loc, scale, q_z, z = _posteriors(40, 3)
    p_z = Independent(Normal(torch.zeros(3, dtype=torch.float64), 1.0), 1)
    log_qz_x, log_pz = q_z.log_prob(z), p_z.log_prob(z)
    parts = kl_decomposition(z, loc, scale, log_qz_x, log_pz, 500, estimator)
    assert parts.total_correlation.shape == (2, 40)
    total = parts.mutual_information + parts.total_correlation + parts.dimension_kl
    torch.testing.assert_close(total, log_qz_x - log_pz, rtol=0, atol=1e-12)


def test_identical_posteriors_split_into_known_parts():
    """Every q(z|x_n) = N(0, I) = p(z): q(z) = prod_l q(z_l) = p(z), so MSS, whose weights sum to
    1 per row, gives MI = TC = dimension-wise KL = 0 exactly; MWS, whose weights sum to 1/N,
    gives log N, (L - 1) log N and -L log N."""
    batch, dim, size = 30, 4, 1000
    loc, scale = torch.zeros(batch, dim, dtype=torch.float64), torch.ones(batch, dim,
                                                                           dtype=torch.float64)
    q_z = Independent(Normal(loc, scale), 1)
    z = q_z.sample((1,))
    log_q = q_z.log_prob(z)
    mss = kl_decomposition(z, loc, scale, log_q, log_q, size, "mss")
    for part in mss:
        torch.testing.assert_close(part, torch.zeros_like(part), rtol=0, atol=1e-12)
    mws = kl_decomposition(z, loc, scale, log_q, log_q, size, "mws")
    for part, value in zip(mws, (1, dim - 1, -dim)):
        torch.testing.assert_close(part, torch.full_like(part, value * math.log(size)))


def test_beta_tcvae_with_tc_beta_1_is_the_negative_elbo_and_tc_beta_weights_the_tc():
    x = torch.rand(24, 6).round()
    model = small_model("beta-tcvae", tc_beta=1.0)
    torch.manual_seed(5)
    loss, terms = model.training_loss(x, num_samples=3)
    torch.manual_seed(5)  # the same draws, the ELBO with its Monte Carlo KL by hand
    q_z = model.encoder(x)
    z = q_z.rsample((3,))
    monte_carlo = (model.decoder(z).log_prob(x) + model.prior().log_prob(z) - q_z.log_prob(z))
    assert float(loss.detach()) == pytest.approx(float(-monte_carlo.detach().mean()), rel=1e-5)
    # the reported terms are the true ELBO's (closed-form KL), not the weighted loss
    torch.testing.assert_close(terms.kl, torch.distributions.kl_divergence(q_z, model.prior()))
    model.tc_beta = 7.0
    torch.manual_seed(5)
    weighted, _ = model.training_loss(x, num_samples=3)
    parts = kl_decomposition(z, q_z.base_dist.loc, q_z.base_dist.scale, q_z.log_prob(z),
                             model.prior().log_prob(z), 200, "mws")
    difference = float((weighted - loss).detach())
    assert difference == pytest.approx(6.0 * float(parts.total_correlation.detach().mean()),
                                       rel=1e-4)


# -- DIP-VAE ----------------------------------------------------------------------------------

def test_dip_penalty_is_zero_at_identity_covariance_and_the_closed_form_elsewhere():
    corners = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    torch.testing.assert_close(covariance_of_means(corners, None), torch.eye(2))
    assert float(dip_penalty(covariance_of_means(corners, None), 3.0, 5.0)) == 0.0
    half = torch.full((4, 2), math.sqrt(0.5))  # q(z): 0.5 I from the means, 0.5 I from the scales
    cov = covariance_of_aggregate(corners * math.sqrt(0.5), half)
    assert float(dip_penalty(cov, 3.0, 5.0)) == pytest.approx(0.0, abs=1e-12)
    a, s = 2.0, 0.5  # means (a, a) and (-a, -a): Cov = a^2 [[1, 1], [1, 1]]
    loc, scale = torch.tensor([[a, a], [-a, -a]]), torch.full((2, 2), s)
    expected_i = 3.0 * 2 * a**4 + 5.0 * 2 * (a**2 - 1) ** 2
    expected_ii = 3.0 * 2 * a**4 + 5.0 * 2 * (a**2 + s**2 - 1) ** 2
    assert float(dip_penalty(covariance_of_means(loc, scale), 3.0, 5.0)) == expected_i
    assert float(dip_penalty(covariance_of_aggregate(loc, scale), 3.0, 5.0)) == expected_ii


@pytest.mark.parametrize("dip_type, lambda_d", [("i", 100.0), ("ii", 10.0)])
def test_dip_vae_loss_is_the_negative_elbo_plus_the_penalty(dip_type, lambda_d):
    model = small_model("dip-vae", dip_type=dip_type)  # lambda_od 10, lambda_d by the type
    assert (model.lambda_od, model.lambda_d) == (10.0, lambda_d)
    x = torch.rand(20, 6).round()
    torch.manual_seed(1)
    loss, _ = model.training_loss(x)
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = elbo_terms(model, x).elbo
        q_z = model.encoder(x)
        cov = model.covariance(q_z.base_dist.loc, q_z.base_dist.scale)
        expected = float(-elbo.mean() + dip_penalty(cov, 10.0, lambda_d))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)


# -- FactorVAE --------------------------------------------------------------------------------

def test_permuting_the_dimensions_keeps_each_marginal_and_breaks_dependence():
    torch.manual_seed(0)
    base = torch.randn(4000)
    z = torch.stack([base, base, -base], 1)  # perfectly dependent columns
    permuted = permute_dims(z)
    torch.testing.assert_close(permuted.sort(0).values, z.sort(0).values, rtol=0, atol=0)
    correlation = torch.corrcoef(permuted.T)
    off_diagonal = correlation[~torch.eye(3, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.1
    assert not torch.equal(permuted[:, 0], z[:, 0])


def _train_discriminator(rho: float, steps: int) -> float:
    """The TC estimate of a FactorVAE discriminator trained by its own steps (batches of 512) on
    draws of a 2-d Gaussian with correlation rho, measured on 8192 fresh draws every 50 steps
    over the second half of the training and averaged (one reading wanders by about 0.1 nats
    with the adversarial noise of the steps)."""
    torch.manual_seed(0)
    model = small_model("factor-vae", latent_dim=2, discriminator_lr=1e-3)
    cholesky = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))
    readings = []
    for step in range(1, steps + 1):
        model.discriminator_step(torch.randn(512, 2) @ cholesky.T)
        if step > steps // 2 and step % 50 == 0:
            with torch.no_grad():
                z = torch.randn(8192, 2) @ cholesky.T
                readings.append(float(tc_estimate(model.discriminator(z)).mean()))
    return sum(readings) / len(readings)


def test_the_discriminator_estimates_the_total_correlation():
    """Independent dimensions: nothing to tell apart, TC estimate near 0. Correlation 0.9: the
    TC of the Gaussian, -(1/2) log(1 - 0.81) = 0.83 nats, from the density ratio the
    discriminator learns (a finite network, 600 steps: within 0.2 nats; seeds 0 and 1 give
    0.82 and 0.89)."""
    assert abs(_train_discriminator(0.0, 200)) < 0.05
    assert _train_discriminator(0.9, 600) == pytest.approx(-0.5 * math.log(1 - 0.81), abs=0.2)


def test_factor_vae_steps_its_discriminator_apart_from_the_vae():
    model = small_model("factor-vae", factor_gamma=10.0)
    x = torch.rand(32, 6).round()
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    torch.manual_seed(2)
    loss, terms = model.training_loss(x)
    loss.backward()
    # the discriminator moved by its own optimizer; its gradients are left None
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.discriminator.parameters()))
    assert all(p.grad is not None for p in model.encoder.parameters())
    # the TC term is gamma times the (pre-step) discriminator's estimate at the same draws
    moved = [p.detach().clone() for p in model.discriminator.parameters()]
    with torch.no_grad():
        for p, old in zip(model.discriminator.parameters(), before):
            p.copy_(old)
        torch.manual_seed(2)
        q_z = model.encoder(x)
        z = q_z.rsample((1,))
        tc = tc_estimate(model.discriminator(z)).mean()
    expected = float(-terms.elbo.detach().mean() + 10.0 * tc)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():
        for p, new in zip(model.discriminator.parameters(), moved):
            p.copy_(new)
    # eval mode: no discriminator step
    model.eval()
    model.training_loss(x)
    assert all(torch.equal(a, p) for a, p in zip(moved, model.discriminator.parameters()))
    # the discriminator's loss: log 2 for a discriminator that cannot tell (zero logits)
    zero = torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(zero.weight)
    torch.nn.init.zeros_(zero.bias)
    with torch.no_grad():
        chance = float(discriminator_loss(zero, torch.randn(5, 2), torch.randn(7, 2)))
    assert chance == pytest.approx(math.log(2))


# -- options ----------------------------------------------------------------------------------

FOREIGN = {"capacity_gamma": 10.0, "tc_beta": 2.0, "dip_type": "ii", "factor_gamma": 5.0,
           "discriminator_lr": 1e-3, "dip_lambda_d": 1.0}
OWNER = {"capacity_gamma": "annealed-capacity", "tc_beta": "beta-tcvae", "dip_type": "dip-vae",
         "dip_lambda_d": "dip-vae", "factor_gamma": "factor-vae",
         "discriminator_lr": "factor-vae"}


@pytest.mark.parametrize("family", ("vae", *NEW_FAMILIES))
def test_a_family_refuses_the_options_of_the_others(family):
    for key, value in FOREIGN.items():
        values = {"model": {"family": family}, "train": {key: value}}
        if OWNER[key] == family:
            config_from_dict(values)
        else:
            with pytest.raises(ConfigError, match=f"{key} .*applies to the model family "
                                                  f"'{OWNER[key]}' only"):
                config_from_dict(values)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_the_options_of_other_objectives_are_refused_not_ignored(family):
    for train in ({"beta": 4.0}, {"kl_warmup_epochs": 2.0}, {"free_bits": 0.5},
                  {"objective": "iwae", "num_samples": 2}):
        with pytest.raises(ConfigError, match=f"'{family}' trains its own objective"):
            config_from_dict({"model": {"family": family}, "train": train})
    model = small_model(family)
    with pytest.raises(ConfigError, match="trains its own objective"):
        model.training_loss(torch.rand(8, 6).round(), beta=0.5)


def test_each_family_says_what_it_needs_of_the_model():
    refused = [("beta-tcvae", {"prior": "mog"}, "N\\(0, I\\)"),
               ("beta-tcvae", {"posterior": "full"}, "diagonal Gaussian"),
               ("dip-vae", {"latent_dim": [4, 2]}, "one stochastic layer"),
               ("factor-vae", {}, "--compile")]
    for family, model, message in refused:
        train = {"compile": True} if family == "factor-vae" else {}
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"model": {"family": family, **model}, "train": train})
    for family in ("beta-tcvae", "factor-vae"):
        with pytest.raises(ConfigError, match="reparameterization"):
            config_from_dict({"model": {"family": family},
                              "train": {"gradient_estimator": "score"}})
    # the capacity and DIP-VAE take any gradient estimator; the capacity any prior and layers
    config_from_dict({"model": {"family": "dip-vae"}, "train": {"gradient_estimator": "score"}})
    config_from_dict({"model": {"family": "annealed-capacity", "prior": "mog"}})
    config_from_dict({"model": {"family": "annealed-capacity", "latent_dim": [4, 2]}})
    with pytest.raises(ConfigError, match="unknown tc estimator 'exact'"):
        config_from_dict({"train": {"tc_estimator": "exact"}})
    with pytest.raises(ConfigError, match="capacity_steps"):
        config_from_dict({"model": {"family": "annealed-capacity"},
                          "train": {"capacity_steps": 0}})


def test_the_flags_set_the_config_keys():
    parser = argparse.ArgumentParser()
    add_train_options(parser)
    args = parser.parse_args(["--family", "beta-tcvae", "--tc-beta", "4", "--tc-estimator",
                              "mss", "--capacity-max", "3", "--dip-type", "ii",
                              "--factor-gamma", "6.4", "--discriminator-lr", "0.002",
                              "--capacity-gamma", "50", "--capacity-steps", "10",
                              "--dip-lambda-od", "1", "--dip-lambda-d", "2"])
    assert overrides(args)["train"] == {
        "tc_beta": 4.0, "tc_estimator": "mss", "capacity_max": 3.0, "dip_type": "ii",
        "factor_gamma": 6.4, "discriminator_lr": 0.002, "capacity_gamma": 50.0,
        "capacity_steps": 10, "dip_lambda_od": 1.0, "dip_lambda_d": 2.0}


def test_models_of_the_families_are_their_classes():
    classes = {"annealed-capacity": AnnealedCapacityVAE, "beta-tcvae": BetaTCVAE,
               "dip-vae": DIPVAE, "factor-vae": FactorVAE}
    for family, cls in classes.items():
        assert FAMILIES[family] is cls and cls.family == family
