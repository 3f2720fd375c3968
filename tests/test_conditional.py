"""Conditional VAEs (vaekit.conditional) and the semi-supervised M2 model
(vaekit.semisupervised): the math against the closed forms of a conditional linear-Gaussian
model, the refusals, and short real trainings on the embedded digits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from vaekit.conditional import ConditionalVAE
from vaekit.evaluation import evaluate_model
from vaekit.config import ModelConfig, RunConfig, config_from_dict
from vaekit.errors import ConfigError
from vaekit.evaluation import importance_estimate
from vaekit.families import build_model
from vaekit.objectives import elbo_terms, iwae_bound, iwae_dreg_surrogate, training_loss
from vaekit.semisupervised import (SemiSupervisedVAE, labelled_subset, semi_supervised_loss,
                                   unlabelled_bound)

D, L, C, S = 4, 2, 3, 0.5  # data dims, latent dims, classes, likelihood scale
W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, -1.0]])  # orthogonal columns
B = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -1.0], [0.0, 1.5, 0.5], [-2.0, 0.3, 1.0]])
BIAS = torch.tensor([0.1, -0.2, 0.3, 0.0])
CLASS_MEANS = torch.tensor([[1.0, -1.0], [0.0, 2.0], [-1.5, 0.5]])  # p(z|y) = N(m_y, I)


def linear_gaussian(conditional_prior: str = "none", semi_supervised: bool = False,
                    exact: bool = True) -> ConditionalVAE:
    """p(z|y) = N(0, I) or N(m_y, I), p(x|z,y) = N(W z + B y + b, S^2 I), and (``exact``) the
    encoder set to the exact posterior q(z|x,y) = N(Sigma (m_y + W^T (x - B y - b) / S^2),
    Sigma), Sigma = (I + W^T W / S^2)^-1 (diagonal: W has orthogonal columns)."""
    cfg = ModelConfig(conditional=not semi_supervised, semi_supervised=semi_supervised,
                      conditional_prior=conditional_prior, num_classes=C, hidden=(), latent_dim=L,
                      likelihood="gaussian", gaussian_scale="fixed", gaussian_init_scale=S,
                      standardize=False)
    model = build_model(cfg, (D,))
    means = CLASS_MEANS if conditional_prior == "class" else torch.zeros(C, L)
    with torch.no_grad():
        if conditional_prior == "class":
            model.prior.loc.copy_(CLASS_MEANS)
        dec = model.decoder.net.layers[0]  # Linear(L + C -> D) on [z, y]
        dec.weight.copy_(torch.cat([W, B], 1))
        dec.bias.copy_(BIAS)
        sigma = torch.linalg.inv(torch.eye(L) + W.T @ W / S**2)
        m = sigma @ W.T / S**2  # [L, D]
        enc = model.encoder.net.layers[0]  # Linear(D + C -> 2L) on [x, y]
        loc_y = (sigma @ means.T) - m @ B  # [L, C]: the posterior mean's dependence on y
        enc.weight.zero_()
        enc.weight[:L, :D] = m
        enc.weight[:L, D:] = loc_y
        enc.bias[:L] = -m @ BIAS
        enc.bias[L:] = torch.log(torch.diagonal(sigma))
        if not exact:
            enc.weight.add_(0.05 * torch.randn_like(enc.weight))
            enc.bias[L:] += 0.7  # wider than the posterior: a proposal with heavy enough tails
    return model.eval()


def exact_log_px_given_y(x: torch.Tensor, y: torch.Tensor, conditional_prior: str = "none"):
    """log N(x; W m_y + B y + b, W W^T + S^2 I) per example."""
    means = CLASS_MEANS if conditional_prior == "class" else torch.zeros(C, L)
    cov = (W @ W.T + S**2 * torch.eye(D)).double().numpy()
    out = []
    for xi, yi in zip(x, y):
        mean = (W @ means[yi] + B[:, yi] + BIAS).double().numpy()
        out.append(multivariate_normal(mean, cov).logpdf(xi.double().numpy()))
    return torch.tensor(out)


def draw_data(n: int, conditional_prior: str = "none", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(C, (n,), generator=g)
    means = CLASS_MEANS if conditional_prior == "class" else torch.zeros(C, L)
    z = means[y] + torch.randn(n, L, generator=g)
    x = z @ W.T + B.T[y] + BIAS + S * torch.randn(n, D, generator=g)
    return x, y


@pytest.mark.parametrize("conditional_prior", ["none", "class"])
def test_exact_posterior_gives_the_exact_log_px_given_y(conditional_prior):
    """With q(z|x,y) the exact posterior every log-weight equals log p(x|y): the importance
    estimate (any K), the IWAE bound and the DReG surrogate equal the closed form, and the
    ELBO's Monte Carlo average converges to it."""
    torch.manual_seed(0)
    model = linear_gaussian(conditional_prior)
    x, y = draw_data(20, conditional_prior)
    exact = exact_log_px_given_y(x, y, conditional_prior)
    bound = model.given(y)
    estimate = importance_estimate(bound, x, 7, batch_size=len(x), seed=1).log_likelihood
    torch.testing.assert_close(estimate, exact, atol=1e-4, rtol=0)
    torch.testing.assert_close(iwae_bound(bound, x, 5).double(), exact, atol=1e-4, rtol=0)
    torch.testing.assert_close(iwae_dreg_surrogate(bound, x, 5)[0].double(), exact, atol=1e-4,
                               rtol=0)
    elbo = elbo_terms(bound, x, num_samples=4000).elbo.double()
    torch.testing.assert_close(elbo, exact, atol=0.05, rtol=0)
    # the evaluation entry point: batched, the same numbers
    result = evaluate_model(model, x, y, num_samples=3, batch_size=7)
    assert result["log_likelihood"] == pytest.approx(float(exact.mean()), abs=1e-4)


def test_other_labels_give_other_likelihoods_and_a_worse_encoder_a_lower_bound():
    """log p(x|y) depends on y as the closed form says, and with a perturbed encoder the ELBO
    is below it while the importance estimate approaches it from below as K grows."""
    torch.manual_seed(0)
    x, y = draw_data(30, "class")
    other = (y + 1) % C
    model = linear_gaussian("class")
    exact_other = exact_log_px_given_y(x, other, "class")
    torch.testing.assert_close(importance_estimate(model.given(other), x, 3, batch_size=len(x)).log_likelihood,
                               exact_other, atol=1e-4, rtol=0)
    assert float((exact_log_px_given_y(x, y, "class") - exact_other).mean()) > 1.0
    torch.manual_seed(1)
    worse = linear_gaussian("class", exact=False)
    exact = exact_log_px_given_y(x, y, "class")
    with torch.no_grad():
        gap_elbo = float((exact - elbo_terms(worse.given(y), x, 2000).elbo.double()).mean())
    gap_10 = float((exact - importance_estimate(worse.given(y), x, 10, batch_size=len(x)).log_likelihood).mean())
    gap_5000 = float((exact - importance_estimate(worse.given(y), x, 5000, batch_size=len(x)).log_likelihood).mean())
    assert gap_elbo > 0.3
    assert gap_elbo > gap_10 > gap_5000 > -0.02
    assert gap_5000 < 0.1


@pytest.mark.parametrize("objective", ["elbo", "iwae", "iwae-dreg"])
@pytest.mark.parametrize("prior", ["normal", "mog", "vamp", "flow"])
def test_every_objective_and_prior_trains_conditioned(objective, prior):
    """One optimizer step of every objective with every prior of a conditional model: finite,
    and the labels matter (another y gives another loss)."""
    torch.manual_seed(0)
    cfg = ModelConfig(conditional=True, num_classes=C, hidden=(16,), latent_dim=L, prior=prior,
                      likelihood="gaussian", standardize=False, prior_components=4)
    model = build_model(cfg, (D,))
    x, y = draw_data(16)
    options = dict(objective=objective, num_samples=3)
    torch.manual_seed(1)
    loss, terms = training_loss(model.given(y), x, **options)
    torch.manual_seed(1)
    other, _ = training_loss(model.given((y + 1) % C), x, **options)
    assert torch.isfinite(loss) and terms.elbo.shape == (16,)
    assert float(loss.detach()) != float(other.detach())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("conditional_prior", ["none", "class", "net"])
@pytest.mark.parametrize("inference", ["top-down", "bottom-up"])
def test_several_stochastic_layers_conditioned(conditional_prior, inference):
    """A two-layer conditional model: the importance estimate of log p(x|y) is finite and above
    the ELBO on average, samples have the data shape, the prior p(z_2|y) depends on y."""
    torch.manual_seed(0)
    cfg = ModelConfig(conditional=True, num_classes=C, hidden=(16,), latent_dim=(3, 2),
                      inference=inference, conditional_prior=conditional_prior,
                      likelihood="gaussian", standardize=False)
    model = build_model(cfg, (D,)).eval()
    x, y = draw_data(40)
    bound = model.given(y)
    elbo = elbo_terms(bound, x, 200).elbo.double().mean()
    log_px = importance_estimate(bound, x, 200, batch_size=len(x)).log_likelihood.mean()
    assert torch.isfinite(log_px) and float(log_px) >= float(elbo) - 0.05
    assert model.sample(5, y=2).shape == (5, D)
    if conditional_prior != "none":
        with torch.no_grad():
            for p in model.prior.top.parameters():
                p.add_(torch.randn_like(p))
        p0, p1 = model.prior_given(model.condition([0])), model.prior_given(model.condition([1]))
        z = torch.zeros(1, 5)
        assert float(p0.log_prob(z)) != float(p1.log_prob(z))


def test_unlabelled_bound_against_the_hand_computed_sum_and_log_px():
    """U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)): with the exact posterior L(x, y) = log p(x|y)
    + log p(y) (up to Monte Carlo noise), so U is the hand-computed sum of closed forms, and
    it is at most log p(x) = log sum_y p(x|y) p(y)."""
    torch.manual_seed(0)
    model = linear_gaussian(semi_supervised=True)
    assert isinstance(model, SemiSupervisedVAE)
    x, _ = draw_data(12)
    with torch.no_grad():
        bound, q_y, _ = unlabelled_bound(model, x, num_samples=3000)
    log_px_y = torch.stack([exact_log_px_given_y(x, torch.full((len(x),), c)) for c in range(C)])
    joint = log_px_y - math.log(C)  # [C, B]: log p(x, y)
    probs = q_y.probs.double().T
    by_hand = (probs * joint).sum(0) - (probs * probs.log()).sum(0)
    torch.testing.assert_close(bound.double(), by_hand, atol=0.05, rtol=0)
    log_px = torch.logsumexp(joint, 0)
    assert bool((bound.double() <= log_px + 0.05).all())
    # a classifier that puts all mass on the most probable class nearly closes the gap
    # whenever the classes are separable (here p(y|x) is not one-hot: the gap stays >= 0)
    assert float((log_px - by_hand).min()) >= -1e-9


def test_semi_supervised_loss_splits_labelled_and_unlabelled():
    torch.manual_seed(0)
    model = linear_gaussian(semi_supervised=True)
    x, y = draw_data(10)
    masked = y.clone()
    masked[5:] = -1
    torch.manual_seed(2)
    loss, terms = semi_supervised_loss(model, x, y=masked, classification_weight=0.0,
                                       num_samples=2000)
    exact = exact_log_px_given_y(x[:5], y[:5]) - math.log(C)
    torch.testing.assert_close(terms.elbo[:5].double(), exact, atol=0.1, rtol=0)
    expected = -(terms.elbo[:5].mean() + terms.elbo[5:].mean())
    assert float(loss) == pytest.approx(float(expected), abs=1e-4)
    weighted, _ = semi_supervised_loss(model, x, y=masked, classification_weight=10.0)
    assert float(weighted) > float(loss) - 1.0  # the cross-entropy term adds a positive amount


def test_labelled_subset_is_balanced_and_seeded():
    labels = torch.arange(1000) % 10
    a = labelled_subset(labels, 10, 10, seed=3)
    assert len(a) == 100 and torch.equal(torch.bincount(labels[a]), torch.full((10,), 10))
    assert torch.equal(a, labelled_subset(labels, 10, 10, seed=3))
    assert not torch.equal(a, labelled_subset(labels, 10, 10, seed=4))
    with pytest.raises(ConfigError, match="class 3 has only"):
        labelled_subset(labels[labels != 3], 5, 10, seed=0)


def test_config_rules():
    with pytest.raises(ConfigError, match="add --conditional"):
        config_from_dict({"model": {"conditional_prior": "class"}})
    with pytest.raises(ConfigError, match="labels-per-class"):
        config_from_dict({"model": {"semi_supervised": True}})
    with pytest.raises(ConfigError, match="semi-supervised only"):
        config_from_dict({"train": {"labels_per_class": 10}})
    with pytest.raises(ConfigError, match="cannot be combined"):
        config_from_dict({"model": {"conditional": True, "conditional_prior": "class",
                                    "prior": "mog"}})
    # defaults reproduce the unconditional model
    cfg = RunConfig()
    assert not cfg.model.conditional and cfg.model.conditional_prior == "none"
    assert type(build_model(cfg.model.model_copy(update={"hidden": (8,), "latent_dim": 2,
                                                         "likelihood": "gaussian"}), (4,))
                ).__name__ == "VAE"


# -- real runs on the embedded digits ----------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A conditional VAE trained briefly on the 8x8 digits (one Gaussian per class prior)."""
    from vaekit.training import train

    out = tmp_path_factory.mktemp("cond") / "run"
    cfg = config_from_dict({"model": {"conditional": True, "conditional_prior": "class",
                                      "latent_dim": 8, "hidden": [128]},
                            "train": {"epochs": 40, "seed": 0, "report": True}})
    train(cfg, out, progress=False, log=lambda _m: None)
    return out


def test_conditional_samples_are_recognised_as_their_class(digits_run):
    """Samples drawn for label c are classified as c by a logistic regression trained on the
    real training digits far more often than chance (10%)."""
    from sklearn.linear_model import LogisticRegression

    import vaekit
    from vaekit.data import load_dataset

    run = vaekit.load(digits_run)
    data = load_dataset("digits")
    classifier = LogisticRegression(max_iter=2000).fit(data.train.flatten(1).numpy(),
                                                       data.train_labels.numpy())
    y = torch.arange(10).repeat_interleave(30)
    x = run.model.sample(len(y), y=y, generator=torch.Generator().manual_seed(0))
    accuracy = float((torch.as_tensor(classifier.predict(x.flatten(1).numpy())) == y)
                     .double().mean())
    assert accuracy > 0.6, accuracy
    assert (digits_run / "style_transfer.png").is_file() and (digits_run / "samples.png").is_file()
    report = (digits_run / "report.html").read_text()
    assert "Style transfer" in report and "Samples per class" in report


def test_save_load_keeps_the_conditioning_and_evaluate_reports_log_px_given_y(digits_run, capsys):
    import vaekit
    from vaekit.cli import main

    run = vaekit.load(digits_run)
    assert isinstance(run.model, ConditionalVAE) and run.model.num_classes == 10
    assert run.config.model.num_classes == 10
    assert main(["evaluate", str(digits_run), "--json", "--num-samples", "20",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["conditioned_on"] == "label"
    assert result["log_likelihood"] >= result["elbo"] - 0.5
    results = json.loads((digits_run / "results.json").read_text())
    # the test ELBO at the end of training equals a fresh evaluation of the saved model
    assert result["elbo"] == pytest.approx(results["elbo"], abs=1e-3)


def test_cli_sample_reconstruct_and_refusals(digits_run, tmp_path, capsys):
    from vaekit.cli import main

    out = tmp_path / "sevens.npy"
    assert main(["sample", str(digits_run), "--label", "7", "--num", "5", "--out", str(out)]) == 0
    assert np.load(out).shape == (5, 1, 8, 8)
    assert main(["sample", str(digits_run), "--label", "all", "--num", "3",
                 "--out", str(tmp_path / "all.png")]) == 0
    assert main(["reconstruct", str(digits_run), "--as-label", "3", "--num", "8",
                 "--out", str(tmp_path / "threes.npy")]) == 0
    assert main(["encode", str(digits_run), "--out", str(tmp_path / "codes.npy")]) == 0
    assert np.load(tmp_path / "codes.npy").shape[1] == 8  # codes of q(z | x, y)
    capsys.readouterr()
    for argv, message in [
        (["sample", str(digits_run), "--label", "12", "--out", str(tmp_path / "a.png")],
         "--label 12 does not exist: the model has 10 classes"),
        (["sample", str(digits_run), "--label", "sandal", "--out", str(tmp_path / "b.png")],
         "label 'sandal' is not a class of this model"),
        (["reconstruct", str(digits_run), "--as-label", "10", "--out", str(tmp_path / "c.png")],
         "does not exist"),
        (["classify", str(digits_run), "--out", str(tmp_path / "d.npy")],
         "needs a semi-supervised run"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not any(tmp_path.glob(argv[-1].split("/")[-1]))


def test_conditional_on_data_without_labels_is_refused(tmp_path, capsys):
    from vaekit.cli import main

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32))
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--conditional", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--conditional needs class labels but the data set has none" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_conditional_mixed_type_table_joins_the_label_after_the_row_encoding(tmp_path, capsys):
    """A --column-types table with a label column trains conditioned on it (the encoder reads
    the row's encoding, then y) and evaluates to the numbers training wrote."""
    import pandas as pd

    from vaekit.cli import main

    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 80)
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": label * 3.0 + rng.normal(size=80), "city": rng.choice(["x", "y"], 80),
                  "label": label}).to_csv(path, index=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--column-types", "auto", "--conditional",
                 "--epochs", "2", "--batch-size", "16", "--hidden", "8", "--latent-dim", "2",
                 "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--num-samples", "0", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["conditioned_on"] == "label"
    assert result["elbo"] == pytest.approx(json.loads((out / "results.json").read_text())["elbo"],
                                           abs=1e-6)
    assert "Reconstruction per column" in (out / "report.html").read_text()


def test_semi_supervised_digits_run_classifies_and_records_its_labels(tmp_path, capsys):
    """M2 on the digits with 5 labels per class: the labelled subset is recorded, evaluate
    reports the classification error, classify writes the predictions; the classifier beats
    chance by far."""
    from vaekit.cli import main

    out = tmp_path / "m2"
    assert main(["train", "--semi-supervised", "--labels-per-class", "5", "--epochs", "15",
                 "--hidden", "64", "--latent-dim", "4", "--no-report", "--out", str(out),
                 "--no-progress"]) == 0
    labelled = json.loads((out / "labelled.json").read_text())
    assert len(labelled["indices"]) == 50 and sorted(set(labelled["labels"])) == list(range(10))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--num-samples", "0", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["classification_error"] < 0.5
    assert main(["classify", str(out), "--out", str(tmp_path / "labels.csv")]) == 0
    rows = (tmp_path / "labels.csv").read_text().splitlines()
    assert rows[0] == "index,label,class" and len(rows) == 1 + result["num_examples"]
    assert main(["classify", str(out), "--out", str(tmp_path / "labels.npy")]) == 0
    assert np.load(tmp_path / "labels.npy").shape == (result["num_examples"],)


def test_explorer_decodes_with_the_chosen_class(digits_run):
    import vaekit
    from vaekit.view.explorer import LatentSpace, RequestError

    run = vaekit.load(digits_run)
    x, labels = run.split("test")
    space = LatentSpace(run.model, x[:50], labels[:50], is_image=True)
    info = space.info()
    assert info["conditional"] and info["num_classes"] == 10
    z = [0.0] * info["latent_dim"]
    three, four = space.decode({"z": z, "label": 3}), space.decode({"z": z, "label": 4})
    assert three["image"].startswith("data:image/png") and three["image"] != four["image"]
    with pytest.raises(RequestError, match="label"):
        space.decode({"z": z, "label": 12})


@pytest.mark.parametrize("model", [{"semi_supervised": True}, {"conditional": True}])
def test_resume_continues_exactly_with_the_labels(tmp_path, model):
    """Interrupted mid-epoch and resumed, a conditional or semi-supervised run ends with the
    same weights as an uninterrupted one: the label batches and the labelled subset follow."""
    from vaekit.training import Trainer

    train = {"epochs": 2, "report": False, "batch_size": 64}
    if "semi_supervised" in model:
        train["labels_per_class"] = 3
    cfg = config_from_dict({"model": {**model, "hidden": [32], "latent_dim": 3},
                            "train": train})
    quiet = dict(progress=False, log=lambda _m: None, callbacks=[])
    straight = Trainer(cfg, tmp_path / "a", **quiet)
    straight.run_epoch()
    straight.run_epoch()
    interrupted = Trainer(cfg, tmp_path / "b", **quiet)
    interrupted.train_epoch(num_batches=5)
    interrupted.save_checkpoint()
    resumed = Trainer(cfg, tmp_path / "b", resume=True, **quiet)
    resumed.run_epoch()
    resumed.run_epoch()
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_sampling_at_a_low_temperature_draws_the_class_means(digits_run, tmp_path, capsys):
    """At T -> 0 every sample of class c is E[x | z = mean of p(z | c), c]; T <= 0 is refused."""
    import vaekit
    from vaekit.cli import main

    run = vaekit.load(digits_run)
    model = run.model
    y = torch.full((6,), 3)
    cold = model.sample(6, y=y, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        prior = model.given(model.condition(torch.tensor([3]))).prior()
        centre = model.given(model.condition(torch.tensor([3]))).decoder(prior.mean).mean
    assert torch.allclose(cold, centre.expand_as(cold), atol=1e-4)
    warm = model.sample(6, y=y, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(warm, centre.expand_as(warm), atol=1e-2)
    out = tmp_path / "threes.npy"
    assert main(["sample", str(digits_run), "--label", "3", "--num", "4", "--temperature", "0.5",
                 "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 1, 8, 8)
    capsys.readouterr()
    for bad in ("0", "-1", "nan"):
        refused = tmp_path / f"bad{bad}.png"
        assert main(["sample", str(digits_run), "--label", "3", "--temperature", bad,
                     "--out", str(refused)]) == 2
        assert not refused.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--temperature" in err[0], err
