"""vaekit.sklearn.VariationalAutoencoder: scikit-learn's own checks, the docs' Pipeline +
GridSearchCV example, persistence, reproducibility, and imputation of a real table with
missing entries against scikit-learn's imputers."""

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.estimator_checks import check_estimator
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

import vaekit
from linear_gaussian import RoughPosterior, make_problem
from linear_gaussian import vae as linear_vae
from vaekit.sklearn import EXPECTED_FAILED_CHECKS, VariationalAutoencoder
from vaekit.sklearn_scores import common_noise, draws_from_noise, row_log_likelihood

DOCS = Path(__file__).resolve().parents[1] / "docs" / "sklearn.md"
SMALL = dict(hidden=(16,), latent_dim=2, epochs=2, score_num_samples=10, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny networks: threads only add contention on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def penguins():
    from palmerpenguins import load_penguins

    return load_penguins()


def test_passes_check_estimator_with_no_expected_failure():
    assert EXPECTED_FAILED_CHECKS == {}
    results = check_estimator(VariationalAutoencoder(**SMALL), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results
              if r["status"] in ("failed", "xfail")]
    assert not failed
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_methods_subset_invariance", "check_methods_sample_order_invariance"} <= passed
    assert len(passed) >= 40


# -- score_samples: each row's estimate is a function of that row alone ------------------------

@pytest.mark.parametrize("params", [
    dict(posterior="gaussian"), dict(posterior="full"), dict(posterior="planar"),
    dict(posterior="iaf"), dict(latent_dim=[2, 2]),  # several layers: each row seeded by itself
], ids=["gaussian", "full", "planar", "iaf", "two-layers"])
def test_a_row_scores_the_same_alone_in_a_batch_and_shuffled(params):
    x = 3 * np.random.default_rng(0).random((12, 3))
    x[7] = x[2]  # a duplicate row scores as its twin
    vae = VariationalAutoencoder(**{**SMALL, **params}, likelihood="gaussian",
                                 random_state=0).fit(x)
    batch = vae.score_samples(x)
    alone = np.concatenate([vae.score_samples(x[i : i + 1]) for i in range(len(x))])
    order = np.random.default_rng(1).permutation(len(x))
    shuffled = vae.score_samples(x[order])
    np.testing.assert_allclose(alone, batch, rtol=1e-12, atol=0)
    np.testing.assert_allclose(shuffled, batch[order], rtol=1e-12, atol=0)
    assert batch[7] == batch[2] and len(set(batch.round(6))) == len(x) - 1


def test_a_table_row_with_missing_entries_scores_the_same_alone_and_in_a_batch(penguins):
    vae = VariationalAutoencoder(**SMALL, random_state=0).fit(penguins)
    rows = penguins.iloc[[3, 0, 271, 8, 339, 10]]  # rows 3, 271 and 339 hold NaNs
    batch = vae.score_samples(rows)
    alone = np.concatenate([vae.score_samples(rows.iloc[i : i + 1]) for i in range(len(rows))])
    np.testing.assert_allclose(alone, batch, rtol=1e-12, atol=0)
    np.testing.assert_allclose(vae.score_samples(rows.iloc[::-1]), batch[::-1], rtol=1e-12,
                               atol=0)
    assert np.isfinite(batch).all()


def test_common_noise_scores_equal_the_exact_log_likelihood_of_a_linear_gaussian_model():
    # with the exact posterior every importance weight is p(x): zero variance, any K, any noise
    W, b, s, decoder, exact, marginal, x = make_problem()
    model = linear_vae(exact, decoder, 2, 5)
    for num_samples in (1, 7):
        torch.testing.assert_close(row_log_likelihood(model, x, num_samples, seed=3),
                                   marginal.log_prob(x), rtol=0, atol=1e-10)


def test_common_noise_draws_follow_the_posterior_diagonal_or_full_covariance():
    # E_q[log w] = log p(x) - KL(q(z|x) || p(z|x)) (closed form between Gaussians): the shared
    # draws z_k = loc(x) + scale(x) eps_k are draws of each row's q
    W, b, s, decoder, exact, marginal, x = make_problem()
    p_z_x = exact(x)
    diagonal = RoughPosterior(exact, shift=0.1, inflate=1.2)(x)
    full = MultivariateNormal(p_z_x.loc - 0.1, 1.3 * p_z_x.covariance_matrix)
    eps = common_noise(0, 20_000, 2)[:, None]  # [K, 1, L]
    prior = Independent(Normal(torch.zeros(2, dtype=torch.float64), 1.0), 1)
    for q in (diagonal, full):
        z = draws_from_noise(q, eps)  # [K, B, L]
        log_w = decoder(z).log_prob(x) + prior.log_prob(z) - q.log_prob(z)
        covariance = torch.diag_embed(q.variance) if q is diagonal else q.covariance_matrix
        kl = kl_divergence(MultivariateNormal(q.mean, covariance), p_z_x)
        standard_error = log_w.std(0) / len(log_w) ** 0.5
        assert ((log_w.mean(0) - (marginal.log_prob(x) - kl)).abs() < 4 * standard_error).all()


def test_common_noise_scores_converge_to_the_log_likelihood_with_a_rough_posterior():
    # a poor diagonal posterior: within 0.03 of log p(x) at K = 20,000 (Burda et al. 2016)
    W, b, s, decoder, exact, marginal, x = make_problem()
    model = linear_vae(RoughPosterior(exact, shift=0.1, inflate=1.2), decoder, 2, 5)
    estimate = row_log_likelihood(model, x, 20_000, seed=0)
    torch.testing.assert_close(estimate, marginal.log_prob(x), rtol=0, atol=0.03)


def test_the_pipeline_and_grid_search_example_in_the_docs_runs():
    text = DOCS.read_text()
    code = re.search(r"<!-- tested-example -->\n```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, str(DOCS), "exec"), scope)
    assert scope["density"].best_params_["latent_dim"] in (2, 4)
    assert np.isfinite(scope["density"].best_score_)
    assert scope["search"].best_score_ > 0.8  # codes of 5 epochs already separate the classes


def test_column_transformer_clone_pickle_and_save_load(penguins, tmp_path):
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    columns = ColumnTransformer([
        ("vae", VariationalAutoencoder(**SMALL, random_state=0), numeric + ["sex"]),
        ("island", OneHotEncoder(), ["island"]),
    ])
    features = columns.fit_transform(penguins)
    assert features.shape == (len(penguins), 2 + 3) and np.isfinite(features).all()

    vae = VariationalAutoencoder(**SMALL, random_state=0).fit(penguins)
    codes, log_px = vae.transform(penguins), vae.score_samples(penguins)
    assert clone(vae).get_params() == vae.get_params()
    restored = pickle.loads(pickle.dumps(vae))
    np.testing.assert_array_equal(restored.transform(penguins), codes)
    np.testing.assert_array_equal(restored.score_samples(penguins), log_px)

    run_dir = vae.save(tmp_path / "run")
    assert {p.suffix for p in run_dir.iterdir()} <= {".json", ".safetensors", ".jsonl"}
    loaded = VariationalAutoencoder.load(run_dir)
    np.testing.assert_array_equal(loaded.transform(penguins), codes)
    np.testing.assert_array_equal(loaded.score_samples(penguins), log_px)
    assert list(loaded.feature_names_in_) == list(penguins.columns)
    run = vaekit.load(run_dir)  # a vaekit run directory like any other: the same model
    rows = torch.from_numpy(vae.schema_.encode(penguins))
    torch.testing.assert_close(vaekit.log_likelihood(run.model, rows, 10, seed=vae.seed_),
                               vaekit.log_likelihood(vae.model_, rows, 10, seed=vae.seed_))
    penguins.to_csv(tmp_path / "penguins.csv", index=False)
    result = vaekit.evaluate(run_dir, source=str(tmp_path / "penguins.csv"), num_samples=5)
    assert np.isfinite(result["log_likelihood"])


def test_reproducible_under_random_state_and_the_global_rng_is_left_alone(penguins):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = VariationalAutoencoder(**SMALL, random_state=7).fit(penguins)
    assert torch.equal(torch.rand(1), before)
    b = VariationalAutoencoder(**SMALL, random_state=7).fit(penguins)
    np.testing.assert_array_equal(a.transform(penguins), b.transform(penguins))
    np.testing.assert_array_equal(a.score_samples(penguins), b.score_samples(penguins))
    pd.testing.assert_frame_equal(a.sample(5, random_state=1), b.sample(5, random_state=1))
    c = VariationalAutoencoder(**SMALL, random_state=8).fit(penguins)
    assert not np.array_equal(a.transform(penguins), c.transform(penguins))


def test_mixed_types_outputs_and_set_output(penguins):
    vae = VariationalAutoencoder(**SMALL, random_state=0, column_types="year=categorical")
    vae.fit(penguins)
    assert vae.schema_.column_specs == ("categorical:3", "categorical:3", "numeric", "numeric",
                                        "numeric", "numeric", "categorical:2", "categorical:3")
    drawn = vae.sample(50, random_state=0)
    assert list(drawn.columns) == list(penguins.columns)
    assert set(drawn["species"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert set(drawn["year"]) <= {2007, 2008, 2009}
    decoded = vae.inverse_transform(vae.transform(penguins.head()))
    assert decoded.shape == (5, 8) and decoded["island"].notna().all()
    assert np.isfinite(vae.reconstruction_error(penguins)).all()
    vae.set_output(transform="pandas")
    frame = vae.transform(penguins)
    assert list(frame.columns) == ["variationalautoencoder0", "variationalautoencoder1"]
    multiple = vae.impute(penguins, num_imputations=3)
    assert len(multiple) == 3 and all(m.drop(columns="sex").notna().all().all() for m in multiple)


def test_bad_input_is_a_one_line_value_error_before_any_work(penguins):
    for params, match in ((dict(prior="gaussian"), "unknown prior 'gaussian'"),
                          (dict(latent_dim=0), "latent_dim"),
                          (dict(hidden="wide"), "hidden"),
                          (dict(column_types="island=text"), "unknown column type 'text'"),
                          (dict(likelihood="bernoulli"), "numeric arrays")):
        with pytest.raises(ValueError, match=match):
            VariationalAutoencoder(**{**SMALL, **params}).fit(penguins)
    fitted = VariationalAutoencoder(**SMALL, likelihood="gaussian").fit(np.random.rand(20, 3))
    with pytest.raises(ValueError, match="impute needs likelihood='auto'"):
        fitted.impute(np.random.rand(2, 3))
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        fitted.sample(0)


# -- imputation of a real table with entries removed at random -------------------------------

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CATEGORICAL = ["species", "island", "sex"]


def imputation_errors(truth, imputed, removed):
    """Per column: RMSE / std over the removed entries (numeric), error rate (categorical)."""
    out = {}
    for c in NUMERIC:
        m = removed[c]
        out[c] = float(np.sqrt(np.mean((imputed[c][m].astype(float) - truth[c][m]) ** 2))
                       / truth[c].std())
    for c in CATEGORICAL:
        m = removed[c]
        out[c] = float(np.mean(imputed[c][m].astype(str).to_numpy()
                               != truth[c][m].astype(str).to_numpy()))
    return out


def sklearn_imputation(imputer, holed):
    """An sklearn imputer on numeric columns + dummy-coded categories (first level dropped,
    so the dummies are not collinear); a category is the largest of its implied indicators."""
    levels = {c: sorted(holed[c].dropna().unique()) for c in CATEGORICAL}
    x = holed[NUMERIC].copy()
    for c in CATEGORICAL:
        for level in levels[c][1:]:
            x[f"{c}={level}"] = np.where(holed[c].isna(), np.nan, (holed[c] == level) * 1.0)
    filled = pd.DataFrame(imputer.fit_transform(x), columns=x.columns, index=x.index)
    out = holed.copy()
    out[NUMERIC] = filled[NUMERIC]
    for c in CATEGORICAL:
        dummies = filled[[f"{c}={level}" for level in levels[c][1:]]].to_numpy()
        indicators = np.column_stack([1 - dummies.sum(1), dummies])
        out[c] = np.asarray(levels[c], dtype=object)[indicators.argmax(1)]
    return out


def test_imputation_of_removed_penguin_entries_against_sklearn_imputers(penguins):
    table = penguins[NUMERIC + CATEGORICAL]
    rng = np.random.default_rng(0)
    removed = pd.DataFrame((rng.random(table.shape) < 0.2) & table.notna().to_numpy(),
                           columns=table.columns)
    holed = table.mask(removed.to_numpy())
    vae = VariationalAutoencoder(latent_dim=4, hidden=(64, 64), epochs=80, batch_size=32,
                                 lr=5e-3, random_state=0, device="cpu").fit(holed)
    results = {
        "vaekit": imputation_errors(table, vae.impute(holed, num_samples=200), removed),
        "IterativeImputer": imputation_errors(
            table, sklearn_imputation(IterativeImputer(max_iter=20, random_state=0), holed),
            removed),
        "SimpleImputer": imputation_errors(
            table, sklearn_imputation(SimpleImputer(), holed), removed),
    }
    print(pd.DataFrame(results).round(3).to_string())
    mean = {name: (np.mean([r[c] for c in NUMERIC]), np.mean([r[c] for c in CATEGORICAL]))
            for name, r in results.items()}
    # far better than column means / most frequent values, close to chained regressions
    assert mean["vaekit"][0] < 0.6 * mean["SimpleImputer"][0]
    assert mean["vaekit"][1] < 0.6 * mean["SimpleImputer"][1]
    assert mean["vaekit"][0] < 1.25 * mean["IterativeImputer"][0]
    assert mean["vaekit"][1] < 1.5 * mean["IterativeImputer"][1]
    # observed entries come back unchanged
    pd.testing.assert_frame_equal(vae.impute(holed)[holed.notna()], holed[holed.notna()],
                                  check_dtype=False)
