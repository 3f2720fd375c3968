"""The table likelihood (vaekit.tables) against closed forms, and TableSchema round trips."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Normal, Poisson

from vaekit.config import RunConfig, merge
from vaekit.data.tabular import TableSchema, parse_column_types
from vaekit.errors import ConfigError, DataError
from vaekit.families import build_model
from vaekit.tables import Column, TableEncoding, TableLikelihood, parse_columns

SPECS = ("numeric", "binary", "count", "categorical:3", "numeric")


def likelihood(specs=SPECS, seed=0):
    torch.manual_seed(seed)
    columns = parse_columns(specs)
    num_params = sum(c.num_params for c in columns)
    lik = TableLikelihood(torch.nn.Linear(2, num_params), (len(columns),), columns)
    lik.loc.copy_(torch.tensor([3.0, 0, 4.0, 0, -1.0])[: len(columns)])
    lik.scale.copy_(torch.tensor([2.0, 1, 1, 1, 0.5])[: len(columns)])
    with torch.no_grad():
        lik.raw_scale.normal_()
    return lik


def rows(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randn(n, generator=g) * 2 + 3,
                     (torch.rand(n, generator=g) < 0.5).float(),
                     torch.poisson(torch.full((n,), 4.0), generator=g),
                     torch.randint(0, 3, (n,), generator=g).float(),
                     torch.randn(n, generator=g)], 1)
    return x


def oracle_log_prob(lik, z, x):
    """sum over the observed entries of each column's torch distribution, from the net's raw
    outputs: the likelihood of the observed sub-vector."""
    params = lik.net(z)  # [B, P]
    sigma = lik.min_scale + torch.nn.functional.softplus(lik.raw_scale)
    total = torch.zeros(len(x))
    for b in range(len(x)):
        offset, numeric = 0, 0
        for j, column in enumerate(lik.columns):
            p = params[b, offset : offset + column.num_params]
            offset += column.num_params
            value = x[b, j]
            if column.kind == "numeric":
                dist = Normal(lik.loc[j] + lik.scale[j] * p[0], lik.scale[j] * sigma[numeric])
                numeric += 1
            elif column.kind == "binary":
                dist = Bernoulli(logits=p[0])
            elif column.kind == "count":
                dist = Poisson(torch.exp(torch.log(lik.loc[j]) + p[0]))
            else:
                dist = Categorical(logits=p)
            if not torch.isnan(value):
                total[b] += dist.log_prob(value.long() if column.kind == "categorical" else value)
    return total


def test_masked_likelihood_is_the_likelihood_of_the_observed_entries():
    lik = likelihood()
    z = torch.randn(6, 2)
    x = rows()
    x[0, 0] = x[1, 3] = x[1, 2] = x[2, 1] = float("nan")
    x[3] = float("nan")  # a row with nothing observed has log p = 0
    with torch.no_grad():
        got = lik(z).log_prob(x)
        expected = oracle_log_prob(lik, z, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert got[3] == 0
    # leaving entries out is exactly dropping their factors
    full = rows()
    with torch.no_grad():
        per_column = lik(z).log_prob_columns(full)
    torch.testing.assert_close(lik(z).log_prob(x).detach(),
                               (per_column * ~torch.isnan(x)).sum(-1), rtol=1e-6, atol=1e-6)


def test_each_column_is_a_normalised_distribution():
    lik = likelihood()
    z = torch.randn(1, 2)
    p_x = lik(z)
    base = rows(1)
    with torch.no_grad():
        # categorical and binary: probabilities over the values sum to 1
        for j, values in ((3, range(3)), (1, range(2)), (2, range(200))):
            x = torch.full((len(values), 5), float("nan"))
            x[:, j] = torch.tensor(list(values), dtype=torch.float32)
            total = torch.logsumexp(p_x.log_prob(x), 0)
            assert abs(float(total)) < 1e-5, (j, float(total))
        # numeric: the density integrates to 1 in the data's units (standardization's Jacobian)
        grid = torch.linspace(-60, 60, 200_001)
        x = torch.full((len(grid), 5), float("nan"))
        x[:, 0] = grid
        integral = torch.trapezoid(p_x.log_prob(x).double().exp(), grid.double())
        assert abs(float(integral) - 1) < 1e-4
    assert base.shape == (1, 5)


def test_extreme_values_give_finite_log_probabilities_and_gradients():
    lik = likelihood()
    z = torch.randn(3, 2) * 1e3
    x = torch.tensor([[1e15, 1, 1e9, 2, -1e15], [0, 0, 0, 0, 0], [float("nan")] * 5])
    log_p = lik(z).log_prob(x)
    assert torch.isfinite(log_p).all()
    log_p.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in lik.parameters())
    # beyond float32's squares the density underflows to 0 (log p = -inf), never NaN
    assert not torch.isnan(lik(z).log_prob(torch.tensor([[1e30, 1, 1e30, 2, -1e30]]))).any()


def test_mean_sample_and_point_estimate():
    lik = likelihood()
    z = torch.randn(4, 2)
    with torch.no_grad():
        p_x = lik(z)
        mean, draws = p_x.mean, p_x.sample((2000,))
        assert mean.shape == (4, 5) and draws.shape == (2000, 4, 5)
        # numeric and count columns: the sample mean converges to the mean (4 standard errors)
        for j in (0, 2, 4):
            stderr = draws[..., j].std(0) / math.sqrt(2000)
            assert ((draws[..., j].mean(0) - mean[:, j]).abs() < 4 * stderr + 1e-3).all()
        assert set(draws[..., 1].unique().tolist()) <= {0.0, 1.0}
        assert set(draws[..., 3].unique().tolist()) <= {0.0, 1.0, 2.0}
        # a mixture with all weight on one component predicts that component's values
        p_k = lik(z[None].expand(3, 4, 2))
        weights = torch.tensor([[1.0] * 4, [0.0] * 4, [0.0] * 4])
        estimate = p_k.point_estimate(weights)
        torch.testing.assert_close(estimate[:, [0, 2, 4]], mean[:, [0, 2, 4]])
        assert torch.equal(estimate[:, 1], (mean[:, 1] > 0.5).float())
        assert torch.equal(estimate[:, 3], mean[:, 3])


def test_encoding_one_hot_standardized_and_missing_indicators():
    encoding = TableEncoding(parse_columns(("numeric", "categorical:3", "binary")))
    encoding.fit_scaling(torch.tensor([[1.0, 0, 0], [3.0, 1, 1], [float("nan"), 2, 1]]))
    assert encoding.loc.tolist() == [2.0, 0.0, 0.0]
    assert encoding.scale[0].item() == pytest.approx(math.sqrt(2))
    out = encoding(torch.tensor([[3.0, 2, 1], [float("nan"), float("nan"), 0]]))
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(out, torch.tensor([[s, 1, 0, 0, 1, 0, 0, 0],
                                                  [0, 0, 0, 0, 0, 1, 1, 0]]))
    assert encoding.encoding_dim == out.shape[1]


def test_support_checks_name_the_column():
    lik = likelihood()
    x = rows()
    x[0, 3] = 3  # categorical:3 holds codes 0..2
    with pytest.raises(DataError, match="column 4 .*categorical:3.*code 0..2"):
        lik.check_support(x)
    x = rows()
    x[0, 1] = 0.5
    with pytest.raises(DataError, match="column 2"):
        lik.check_support(x)
    x = rows()
    x[0, 0] = float("inf")
    with pytest.raises(DataError, match="infinite"):
        lik.check_support(x)
    x = rows()
    x[:, 2] = float("nan")
    lik.check_support(x)  # missing entries are fine


def test_column_types_and_config_validation():
    assert [str(c) for c in parse_columns(SPECS)] == list(SPECS)
    for bad in ("numerical", "categorical", "categorical:x", "count:3"):
        with pytest.raises(ValueError):
            Column.parse(bad)
    with pytest.raises(ConfigError, match="unknown column type"):
        merge(RunConfig(), {"model": {"columns": ["numerc"]}})
    with pytest.raises(ConfigError, match="needs the column types"):
        merge(RunConfig(), {"model": {"likelihood": "table"}})
    with pytest.raises(ConfigError, match="not 'bernoulli'"):
        merge(RunConfig(), {"model": {"columns": ["numeric"], "likelihood": "bernoulli"}})
    with pytest.raises(ConfigError, match="standardizes"):
        merge(RunConfig(), {"model": {"columns": ["numeric"], "standardize": True}})
    config = merge(RunConfig(), {"model": {"columns": list(SPECS), "hidden": [8],
                                           "latent_dim": 2, "likelihood": "table"}})
    model = build_model(config.model, (5,))
    assert isinstance(model.decoder, TableLikelihood)
    x = rows()
    x[0, 0] = float("nan")
    assert torch.isfinite(model.encode(x).mean).all()


def test_schema_infers_types_encodes_and_decodes_a_frame():
    df = pd.DataFrame({"age": [30.0, None, 50.0], "city": ["b", "a", None],
                       "member": [True, False, True], "visits": [0, 3, 1]})
    schema = TableSchema.infer(df, "visits=count")
    assert schema.kinds == ["numeric", "categorical", "binary", "count"]
    assert schema.column_specs == ("numeric", "categorical:2", "binary", "count")
    rows_ = schema.encode(df)
    np.testing.assert_array_equal(rows_, np.array([[30, 1, 1, 0], [np.nan, 0, 0, 3],
                                                   [50, np.nan, 1, 1]], dtype=np.float32))
    back = schema.decode(rows_)
    assert back["city"].tolist()[:2] == ["b", "a"] and pd.isna(back["city"][2])
    assert back["member"].tolist() == [True, False, True]
    # an unseen category is a missing entry; the schema survives JSON
    again = TableSchema.from_json(schema.to_json())
    assert np.isnan(again.encode(df.assign(city=["c", "a", "b"]))[0, 1])
    with pytest.raises(DataError, match="unknown column type 'counts'"):
        parse_column_types("visits=counts")
    with pytest.raises(DataError, match="unknown columns: height"):
        TableSchema.infer(df, {"height": "numeric"})
    with pytest.raises(DataError, match="not numbers"):
        TableSchema.infer(df, {"city": "numeric"}).encode(df)


# -- the command line on a CSV table -----------------------------------------------------------

def test_cli_trains_evaluates_and_reports_a_mixed_type_csv(tmp_path, capsys):
    import json

    from vaekit.cli import main

    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"age": rng.normal(40, 10, n).round(1),
                          "city": rng.choice(["oslo", "rome", "lima"], n),
                          "visits": rng.poisson(3, n), "label": rng.choice(["a", "b"], n)})
    frame.loc[[1, 5, 9], "age"] = np.nan
    frame.loc[[2, 7], "city"] = None
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--column-types", "visits=count", "--epochs", "2",
                 "--hidden", "8", "--latent-dim", "2", "--batch-size", "16", "--no-progress",
                 "--device", "cpu", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["columns"] == ["numeric", "categorical:3", "count"]
    assert config["model"]["likelihood"] == "table" and config["model"]["standardize"] is False
    report = (out / "report.html").read_text()
    assert "Reconstruction per column" in report and "visits" in report and "RMSE / std" in report
    assert main(["evaluate", str(out), "--num-samples", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(result["log_likelihood"])
    # a wrong declaration is a one-line error with exit status 2, before training
    assert main(["train", "--data", str(path), "--column-types", "visits=counts",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "unknown column type 'counts'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
