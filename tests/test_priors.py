"""Priors against independent computations (scipy/numpy mixtures, the encoder's own
posteriors), every prior x posterior combination end to end (train, evaluate, save, load), and
multimodal priors beating N(0, I) on data with clustered latent structure."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm
from torch.distributions import (Categorical, Independent, MixtureSameFamily, MultivariateNormal,
                                 Normal)

import vaekit
from vaekit.storage import load_tensors, save_tensors
from vaekit.config import RunConfig, merge
from vaekit.errors import ConfigError
from vaekit.evaluation import evaluate_elbo, evaluate_model, log_likelihood, seeded
from vaekit.likelihoods import GaussianLikelihood
from vaekit.model import VAE
from vaekit.nets import MLP
from vaekit.objectives import iwae_bound, training_loss
from vaekit.posteriors import POSTERIORS, GaussianPosterior
from vaekit.priors import PRIORS, DiagonalGaussianMixture, MixtureOfGaussiansPrior, VampPrior
from vaekit.priors import mixture as priors_mixture
from vaekit.training import Trainer


@pytest.fixture
def one_thread():
    """Tiny networks run fastest (and most reproducibly) on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_mixture_of_gaussians_density_matches_brute_force():
    torch.manual_seed(0)
    prior = MixtureOfGaussiansPrior(3, num_components=5)
    with torch.no_grad():
        prior.log_scale.normal_(0, 0.5)
        prior.logits.normal_(0, 1)
    z = torch.randn(7, 3) * 2
    log_p = prior().log_prob(z).detach().numpy()
    mu, sigma = prior.loc.detach().numpy(), prior.log_scale.exp().detach().numpy()
    log_pi = prior.logits.log_softmax(0).detach().numpy()
    # sum_k pi_k prod_i N(z_i; mu_ki, sigma_ki), term by term with scipy
    per_component = norm.logpdf(z.numpy()[:, None, :], mu[None], sigma[None]).sum(-1)  # [N, K]
    np.testing.assert_allclose(log_p, logsumexp(per_component + log_pi, axis=1), rtol=1e-5)
    assert prior().sample((4,)).shape == (4, 3)


def test_diagonal_gaussian_mixture_log_prob_is_exact_where_float32_would_cancel():
    """The matrix form of log p(z) (DiagonalGaussianMixture) against scipy, term by term, in a
    VampPrior's hard case: 40 dimensions, scales down to e^-5 around means near 3, z drawn
    close to a component (each of z^2 / sigma^2 and mu^2 / sigma^2 about 2e5 per dimension
    there, their difference about 1). In float32 the expansion would miss by ~0.5 nats."""
    torch.manual_seed(0)
    k, dim = 50, 40
    loc = 3 + torch.randn(k, dim)
    scale = torch.empty(k, dim).uniform_(-5, 1).exp()
    logits = torch.randn(k)
    near = loc[:20] + scale[:20] * torch.randn(20, dim)  # inside a component
    z = torch.cat([near, 3 + 3 * torch.randn(10, dim)]).reshape(3, 10, dim)  # and anywhere
    components = Independent(Normal(loc, scale), 1)
    p = priors_mixture(Categorical(logits=logits), components)
    assert isinstance(p, DiagonalGaussianMixture)
    log_p = p.log_prob(z)
    assert log_p.shape == (3, 10) and log_p.dtype == torch.float32
    zd, mu, sigma = (t.double().numpy() for t in (z, loc, scale))
    per_component = norm.logpdf(zd[..., None, :], mu, sigma).sum(-1)  # [3, 10, K]
    exact = logsumexp(per_component + torch.log_softmax(logits.double(), 0).numpy(), axis=-1)
    np.testing.assert_allclose(log_p.numpy(), exact, rtol=2e-7, atol=2e-3)
    # gradients for z, means and scales are torch's broadcast form's (in float64)
    args = [t.double().requires_grad_() for t in (z, loc, scale)]
    fast = DiagonalGaussianMixture(Categorical(logits=logits.double()),
                                   Independent(Normal(args[1], args[2]), 1)).log_prob(args[0])
    slow = MixtureSameFamily(Categorical(logits=logits.double()),
                             Independent(Normal(args[1], args[2]), 1)).log_prob(args[0])
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-9)
    for a, b in zip(torch.autograd.grad(fast.sum(), args), torch.autograd.grad(slow.sum(), args)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    # a batched (expanded) mixture falls back to torch's log_prob, with the same values
    batched = p.expand((3, 10)).log_prob(z)
    torch.testing.assert_close(batched, log_p, rtol=1e-5, atol=1e-3)


def test_vamp_prior_is_the_average_of_encoder_posteriors_at_pseudo_inputs():
    torch.manual_seed(0)
    encoder = GaussianPosterior(MLP((6,), (4,), [8]), 2)
    prior = VampPrior(2, encoder=encoder, data_shape=(6,), num_components=4)
    z = torch.randn(5, 2)
    log_p = prior().log_prob(z)
    q = [encoder(prior.pseudo_inputs[k : k + 1]) for k in range(4)]  # one pseudo-input at a time
    densities = torch.stack([q_k.log_prob(z).exp() for q_k in q]).mean(0)  # (1/K) sum_k q(z|u_k)
    torch.testing.assert_close(log_p.exp(), densities)
    # gradients reach both the pseudo-inputs and the shared encoder
    log_p.sum().backward()
    assert prior.pseudo_inputs.grad.abs().sum() > 0
    assert encoder.net.layers[0].weight.grad.abs().sum() > 0


def test_clipped_vamp_prior_sees_hardtanh_of_its_pseudo_inputs():
    """With clip_pseudo_inputs the mixture's components are q(z | clip(u, 0, 1)); the pixels
    beyond [0, 1] get no gradient (the authors' hard tanh), those inside do."""
    torch.manual_seed(0)
    encoder = GaussianPosterior(MLP((6,), (4,), [8]), 2)
    prior = VampPrior(2, encoder=encoder, data_shape=(6,), num_components=3,
                      clip_pseudo_inputs=True)
    with torch.no_grad():
        prior.pseudo_inputs.copy_(torch.tensor([[-0.3, 0.2, 1.4, 0.5, 0.9, 2.0]] * 3))
    clipped = torch.tensor([[0.0, 0.2, 1.0, 0.5, 0.9, 1.0]] * 3)
    z = torch.randn(5, 2)
    log_p = prior().log_prob(z)
    q = encoder(clipped)  # batch [3]
    expected = torch.logsumexp(q.log_prob(z[:, None, :]), 1) - math.log(3)
    torch.testing.assert_close(log_p, expected)
    log_p.sum().backward()
    outside = torch.tensor([True, False, True, False, False, True])
    assert (prior.pseudo_inputs.grad[:, outside] == 0).all()
    assert (prior.pseudo_inputs.grad[:, ~outside] != 0).all()
    unclipped = VampPrior(2, encoder=encoder, data_shape=(6,), num_components=3)
    assert unclipped.inputs() is unclipped.pseudo_inputs


def test_vamp_prior_shares_the_encoder_without_saving_it_twice(tmp_path):
    from vaekit.config import ModelConfig
    from vaekit.families import build_model

    model = build_model(ModelConfig(hidden=(8,), latent_dim=2, likelihood="bernoulli",
                                    prior="vamp", prior_components=3), (1, 4, 4))
    assert model.prior.encoder is model.encoder
    keys = list(model.state_dict())
    assert [k for k in keys if k.startswith("prior.")] == ["prior.pseudo_inputs"]
    assert len({id(p) for p in model.parameters()}) == len(list(model.parameters()))
    save_tensors(tmp_path / "w.safetensors", model.state_dict(), {})  # shared tensors would fail
    tensors, _ = load_tensors(tmp_path / "w.safetensors")
    assert sorted(tensors) == sorted(keys)
    x = torch.rand(10, 1, 4, 4)
    model.prior.init_from_data(x)
    assert all(any(torch.equal(u, xi) for xi in x) for u in model.prior.pseudo_inputs)


def test_every_prior_samples_and_scores_with_event_shape_latent_dim():
    encoder = GaussianPosterior(MLP((6,), (6,), [8]), 3)
    for name, cls in PRIORS.items():
        p_z = cls(3, num_components=4, flow_steps=2, flow_hidden=8, encoder=encoder,
                  data_shape=(6,))()
        z = p_z.sample((5, 2))
        assert z.shape == (5, 2, 3) and p_z.log_prob(z).shape == (5, 2), name
        assert torch.isfinite(p_z.log_prob(z * 100)).all(), name  # far tails stay finite


def tiny(prior, posterior, epochs=1):
    model = {"hidden": (32,), "latent_dim": 3, "likelihood": "bernoulli", "prior": prior,
             "posterior": posterior, "prior_components": 4, "flow_steps": 2, "flow_hidden": 16}
    return merge(RunConfig(), {"train": {"epochs": epochs, "batch_size": 128}, "model": model})


COMBINATIONS = list(itertools.product(PRIORS, POSTERIORS))


@pytest.mark.parametrize("prior,posterior", COMBINATIONS)
def test_every_combination_trains_evaluates_and_round_trips(tmp_path, prior, posterior, one_thread):
    if getattr(PRIORS[prior], "needs_posterior_density", False) and not POSTERIORS[posterior].has_inverse:
        with pytest.raises(ConfigError, match=f"posterior '{posterior}' cannot.*valid posteriors"):
            tiny(prior, posterior)
        return
    trainer = Trainer(tiny(prior, posterior, epochs=2), tmp_path / "run", progress=False,
                      log=lambda m: None)
    trainer.fit()
    history = trainer.history
    assert history[-1]["val_elbo"] > history[0]["train_elbo"]  # it learned something
    x = trainer.data.test[:50]
    model = vaekit.load(tmp_path / "run").model  # the loaded model, not the Run
    for m in (trainer.model.eval(), model):
        assert math.isfinite(evaluate_elbo(m, x)["elbo"])
    with seeded(0):
        expected = iwae_bound(trainer.model, x, 8)
    with seeded(0):
        got = iwae_bound(model, x, 8)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected)  # identical after save/load
    g = torch.Generator()
    torch.testing.assert_close(model.sample(4, generator=g.manual_seed(1)),
                               trainer.model.sample(4, generator=g.manual_seed(1)))
    assert model.reconstruct(x[:4]).shape == x[:4].shape
    # `vaekit evaluate`: log p(x) in chunks of the drawn samples (a planar posterior's density
    # is known only at the tensor it sampled, not at slices of it), and the latent diagnostics
    chunked = log_likelihood(model, x, num_samples=16, chunk_size=4)
    torch.testing.assert_close(chunked, log_likelihood(model, x, num_samples=16, chunk_size=16))
    report = evaluate_model(model, x, num_samples=16)
    assert math.isfinite(report["log_likelihood"]) and report["log_likelihood"] >= report["elbo"] - 1
    mi = report["mutual_information"]
    assert (mi is None) == (not POSTERIORS[posterior].has_inverse)
    assert mi is None or (math.isfinite(mi) and mi <= math.log(len(x)) + 1e-6)  # at most log N


# --- multimodal latent structure --------------------------------------------------------------
# z ~ (1/4) sum_c N(c, 0.15^2 I) with c in {(+-3, +-3)}, x = W z + b + 0.2 eps in 10-D, and the
# VAE's decoder is this fixed decoder: only the encoder and the prior learn. Then the true p(x)
# is a mixture of 4 Gaussians, and the N(0, I) prior gives the model the marginal
# N(b, W W^T + 0.2^2 I) exactly (Gaussian, far from the data), while a mixture prior (mog, or
# vamp through the encoder) can reach the truth.
DATA_DIM, LATENT_DIM, NOISE, SPREAD = 10, 2, 0.2, 0.15
CENTERS = torch.tensor([[3.0, 3.0], [-3.0, 3.0], [3.0, -3.0], [-3.0, -3.0]])


def clustered_data(n, seed, W, b):
    g = torch.Generator().manual_seed(seed)
    c = CENTERS[torch.randint(len(CENTERS), (n,), generator=g)]
    z = c + SPREAD * torch.randn(n, LATENT_DIM, generator=g)
    return z @ W.T + b + NOISE * torch.randn(n, DATA_DIM, generator=g)


def fit_with_fixed_decoder(prior_name, x_train, W, b, steps=500, seed=0):
    torch.manual_seed(seed)
    encoder = GaussianPosterior(MLP((DATA_DIM,), (2 * LATENT_DIM,), [32]), LATENT_DIM)
    net = MLP((LATENT_DIM,), (DATA_DIM,), [])  # linear
    with torch.no_grad():
        net.layers[0].weight.copy_(W)
        net.layers[0].bias.copy_(b)
    net.requires_grad_(False)
    decoder = GaussianLikelihood(net, (DATA_DIM,), "fixed", NOISE, 1e-3)
    prior = PRIORS[prior_name](LATENT_DIM, num_components=8, encoder=encoder,
                               data_shape=(DATA_DIM,))
    if hasattr(prior, "init_from_data"):
        prior.init_from_data(x_train)
    model = VAE(encoder, decoder, prior, (DATA_DIM,))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss, _ = training_loss(model, x_train[torch.randint(len(x_train), (256,), generator=g)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_mixture_priors_beat_the_normal_prior_on_clustered_latents(one_thread):
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(DATA_DIM, LATENT_DIM, generator=g), torch.randn(DATA_DIM, generator=g)
    x_train, x_test = clustered_data(2000, 1, W, b), clustered_data(500, 2, W, b)
    truth = MixtureSameFamily(
        Categorical(torch.ones(len(CENTERS))),
        MultivariateNormal(CENTERS @ W.T + b, SPREAD**2 * W @ W.T + NOISE**2 * torch.eye(DATA_DIM)))
    true_ll = float(truth.log_prob(x_test).mean())
    normal_marginal = MultivariateNormal(b, W @ W.T + NOISE**2 * torch.eye(DATA_DIM))
    normal_ll = float(normal_marginal.log_prob(x_test).mean())  # exact, for the normal prior
    ll = {}
    for name in ["normal", "mog", "vamp"]:
        model = fit_with_fixed_decoder(name, x_train, W, b)
        with seeded(0), torch.no_grad():
            ll[name] = float(iwae_bound(model, x_test, 500).mean())  # a lower bound on log p(x)
    # measured (seed 0): normal -11.72 (exact -11.71), mog -2.25, vamp -3.55, truth -1.41
    msg = f"{ll}, true {true_ll:.2f}, exact under the normal prior {normal_ll:.2f}"
    assert ll["normal"] < normal_ll + 0.1, msg  # sanity: a bound, not above the exact value
    for name in ["mog", "vamp"]:
        assert ll[name] > normal_ll + 5.0, msg  # tolerance: 5 nats per example
        assert ll[name] > true_ll - 3.0, msg  # within 3 nats of the truth
        assert ll[name] < true_ll + 0.3, msg  # and (a bound) not above it


# -- sampling at a temperature ----------------------------------------------------------------


def test_a_tempered_gaussian_and_mixture_have_their_scales_times_t():
    from vaekit.priors import tempered

    torch.manual_seed(0)
    t = 0.6
    normal = PRIORS["normal"](3)()
    cold = tempered(normal, t)
    z = torch.randn(5, 3)
    # closed form: N(0, T^2 I)
    expected = torch.distributions.Normal(0.0, t).log_prob(z).sum(-1)
    assert torch.allclose(cold.log_prob(z), expected, atol=1e-6)
    draws = cold.sample((200_000,))
    assert abs(float(draws.std()) - t) < 0.005 and abs(float(draws.mean())) < 0.005
    mog = PRIORS["mog"](2, num_components=4)
    with torch.no_grad():
        mog.log_scale.uniform_(-1, 1)
        mog.logits.normal_()
    p, q = mog(), tempered(mog(), t)
    assert torch.equal(q.mixture_distribution.probs, p.mixture_distribution.probs)
    assert torch.equal(q.component_distribution.mean, p.component_distribution.mean)
    assert torch.allclose(q.component_distribution.stddev, t * p.component_distribution.stddev)
    assert tempered(normal, 1.0) is normal


def test_a_tempered_flow_prior_pushes_t_eps_through_the_same_flow():
    from vaekit.priors import tempered

    torch.manual_seed(0)
    flow = PRIORS["flow"](4, flow_steps=3, flow_hidden=16)
    with torch.no_grad():  # a flow away from the identity it starts as
        for parameter in flow.parameters():
            parameter.normal_(0, 0.3)
    p, t = flow(), 0.5
    torch.manual_seed(1)
    z_cold = tempered(p, t).sample((64,))
    torch.manual_seed(1)
    z = p.sample((64,))
    eps = z
    for transform in reversed(p.transforms):
        eps = transform.inv(eps)
    pushed = t * eps
    for transform in p.transforms:
        pushed = transform(pushed)
    assert torch.allclose(z_cold, pushed, atol=1e-5)
    assert not torch.allclose(z_cold, z, atol=1e-2)


def test_a_prior_without_a_temperature_is_refused():
    from torch.distributions import Uniform

    from vaekit.errors import ConfigError
    from vaekit.priors import tempered

    with pytest.raises(ConfigError, match="has no temperature"):
        tempered(Uniform(torch.zeros(2), torch.ones(2)), 0.5)


def test_a_tempered_chain_of_linear_gaussian_layers_is_the_joint_gaussian_with_cov_times_t2():
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2 + b, s^2 I): [z1, z2] is jointly Gaussian with mean [b, 0]
    and covariance [[A A^T + s^2 I, A], [A^T, I]]; tempering every layer gives covariance T^2 that."""
    from vaekit.hierarchy import LayeredLatent
    from vaekit.priors import tempered

    torch.manual_seed(0)
    a, b, s, t = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64), 0.4, 0.6
    top = Independent(Normal(torch.zeros(2, dtype=torch.float64), 1.0), 1)
    chain = LayeredLatent(top, [lambda z2: Independent(Normal(z2 @ a.T + b, s), 1)], sizes=(3, 2),
                          order=(1, 0))
    covariance = torch.zeros(5, 5, dtype=torch.float64)
    covariance[:3, :3] = a @ a.T + s**2 * torch.eye(3, dtype=torch.float64)
    covariance[:3, 3:], covariance[3:, :3] = a, a.T
    covariance[3:, 3:] = torch.eye(2, dtype=torch.float64)
    joint = MultivariateNormal(torch.cat([b, torch.zeros(2, dtype=torch.float64)]),
                               covariance_matrix=t**2 * covariance)
    z = torch.randn(7, 5, dtype=torch.float64)
    assert torch.allclose(tempered(chain, t).log_prob(z), joint.log_prob(z), atol=1e-10)
    draws = tempered(chain, t).sample((200_000,))
    assert torch.allclose(torch.cov(draws.T), t**2 * covariance, atol=0.01)
    assert tempered(chain, 1.0) is chain
