"""A conditional VAE on numeric CSV covariates (``--condition-columns``): the columns leave x,
are standardized with the training split's statistics stored in the run, a saved run
evaluates to the same numbers, samples follow the covariates the way the data do, and every
misuse is refused with one line before any file is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vaekit.cli import main
from vaekit.conditional import ConditionalVAE
from vaekit.evaluation import evaluate_elbo
from vaekit.config import config_from_dict, load_config_file
from vaekit.errors import ConfigError, DataError

AGE_SLOPE, INCOME_SLOPE, NOISE = 0.1, 2e-4, 0.2  # x1 = 0.1 age + e, x2 = 2e-4 income + e


def covariate_table(n: int = 300, seed: int = 0):
    """Rows (age, income, x1, x2) with x1 = 0.1 age + noise and x2 = 2e-4 income + noise: the
    covariates determine x up to noise of sd 0.2."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    age, income = rng.uniform(20, 70, n), rng.normal(50_000, 10_000, n)
    return pd.DataFrame({"age": age, "income": income,
                         "x1": AGE_SLOPE * age + rng.normal(0, NOISE, n),
                         "x2": INCOME_SLOPE * income + rng.normal(0, NOISE, n)})


@pytest.fixture(scope="module")
def covariate_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("covariates") / "people.csv"
    covariate_table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def covariate_run(covariate_csv):
    out = covariate_csv.parent / "run"
    assert main(["train", "--data", str(covariate_csv), "--conditional", "--condition-columns",
                 "age,income", "--conditional-prior", "net", "--epochs", "40", "--batch-size",
                 "32", "--hidden", "32", "--latent-dim", "2", "--seed", "0", "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_condition_columns_leave_x_and_are_standardized_with_train_statistics(covariate_run,
                                                                              covariate_csv):
    import vaekit
    from vaekit.data import load_dataset

    run = vaekit.load(covariate_run)
    assert isinstance(run.model, ConditionalVAE)
    assert run.model.num_classes is None and run.model.condition_dim == 2
    assert run.model.data_shape == (2,)  # x1, x2: age and income are not modelled
    saved = json.loads((covariate_run / "config.json").read_text())
    assert saved["data"]["condition_columns"] == ["age", "income"]
    assert saved["model"]["condition_dim"] == 2 and saved["model"]["num_classes"] is None
    # the same file read without conditions: columns age, income, x1, x2 of the same split
    plain = load_dataset(str(covariate_csv))
    train = plain.train.double().numpy()
    np.testing.assert_allclose(saved["data"]["condition_mean"], train[:, :2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(saved["data"]["condition_std"], train[:, :2].std(0, ddof=1),
                               rtol=1e-6)
    x, _ = run.split("train")
    torch.testing.assert_close(x, plain.train[:, 2:])
    # every split standardized with the training statistics (not its own)
    test = plain.test.double().numpy()
    expected = (test[:, :2] - train[:, :2].mean(0)) / train[:, :2].std(0, ddof=1)
    np.testing.assert_allclose(run.condition("test").numpy(), expected, rtol=1e-5, atol=1e-6)
    assert abs(float(run.condition("train").mean())) < 1e-5
    assert (covariate_run / "report.html").is_file()  # the report shows codes given y


def test_saved_run_evaluates_to_the_same_numbers_with_the_stored_statistics(
        covariate_run, tmp_path, capsys):
    import vaekit

    capsys.readouterr()
    assert main(["evaluate", str(covariate_run), "--json", "--num-samples", "20",
                 "--no-progress"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["conditioned_on"] == "columns"
    assert first["condition_columns"] == ["age", "income"]
    results = json.loads((covariate_run / "results.json").read_text())
    assert first["elbo"] == pytest.approx(results["elbo"], abs=1e-6)  # end of training
    assert first["log_likelihood"] >= first["elbo"] - 0.5
    assert main(["evaluate", str(covariate_run), "--json", "--num-samples", "20",
                 "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    for key in ("elbo", "reconstruction", "kl", "log_likelihood", "log_likelihood_stderr"):
        assert again[key] == first[key], key
    # another table: standardized with the run's statistics, not with that table's own
    other = tmp_path / "other.csv"
    covariate_table(120, seed=1).assign(age=lambda t: t.age + 30).to_csv(other, index=False)
    assert main(["evaluate", str(covariate_run), "--data", str(other), "--json",
                 "--num-samples", "0", "--no-progress"]) == 0
    reported = json.loads(capsys.readouterr().out)
    run = vaekit.load(covariate_run)
    from vaekit.data import load_dataset

    table = load_dataset(str(other)).test  # age, income, x1, x2
    dc = run.config.data
    y = (table[:, :2].double() - torch.tensor(dc.condition_mean)) / torch.tensor(dc.condition_std)
    expected = evaluate_elbo(run.model, table[:, 2:], y.float())
    assert reported["elbo"] == pytest.approx(expected["elbo"], abs=1e-5)


def test_samples_follow_the_covariates_as_the_data_do(covariate_run, tmp_path):
    """E[x | z, y] for z ~ p(z|y): x1 rises with age (0.1 per year in the data: 4 over 25 -> 65)
    and x2 with income (2 over 40,000 -> 60,000), each hardly moved by the other covariate."""
    def mean_sample(condition: str) -> np.ndarray:
        out = tmp_path / f"{condition.replace('=', '').replace(',', '_')}.npy"
        assert main(["sample", str(covariate_run), "--condition", condition, "--num", "400",
                     "--out", str(out)]) == 0
        x = np.load(out)
        assert x.shape == (400, 2)
        return x.mean(0)

    young, old = mean_sample("age=25"), mean_sample("age=65")
    poor, rich = mean_sample("income=40000"), mean_sample("income=60000")
    assert old[0] - young[0] == pytest.approx(40 * AGE_SLOPE, abs=1.5)
    assert rich[1] - poor[1] == pytest.approx(20_000 * INCOME_SLOPE, abs=1.0)
    assert abs(old[1] - young[1]) < 1.0 and abs(rich[0] - poor[0]) < 1.0


def test_python_api_takes_standardized_covariates(covariate_run):
    import vaekit

    model = vaekit.load(covariate_run).model
    generator = torch.Generator().manual_seed(0)
    one = model.sample(8, y=torch.tensor([1.0, 0.0]), generator=generator)  # one y for all
    each = model.sample(3, y=torch.zeros(3, 2))
    default = model.sample(3)  # y = 0: every covariate at its training mean
    assert one.shape == (8, 2) and each.shape == default.shape == (3, 2)
    with pytest.raises(ConfigError, match="not on class labels"):
        model.sample(2, y=torch.tensor([1, 0]))
    with pytest.raises(ConfigError, match="conditioned on 2 covariates"):
        model.sample(2, y=torch.zeros(2, 3))


@pytest.mark.parametrize("argv, message", [
    (["--conditional", "--condition-columns", "agee"],
     "no column 'agee' to condition on (--condition-columns); its columns are age, income, "
     "x1, x2, city"),
    (["--conditional", "--condition-columns", "city"], "condition column 'city' is not numeric"),
    (["--conditional", "--condition-columns", "gaps"], "condition column 'gaps' has 2 empty cells"),
    (["--conditional", "--condition-columns", "age,flat", "--data", "FLAT"],
     "condition column 'flat' is constant over the training split"),
    (["--condition-columns", "age"], "add --conditional"),
    (["--semi-supervised", "--labels-per-class", "2", "--condition-columns", "age"],
     "--semi-supervised classifies class labels: use one or the other"),
    (["--conditional", "--conditional-prior", "--condition-columns", "age"],
     "--conditional-prior class is one Gaussian per class"),
    (["--conditional", "--condition-columns", "age", "--data", "digits"],
     "--condition-columns takes columns of a .csv table, not the data set 'digits'"),
    (["--conditional", "--condition-columns", "age", "--data", "FOLDER"],
     "--condition-columns takes columns of a .csv table, not a folder of images"),
])
def test_training_refusals_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    path, flat = tmp_path / "t.csv", tmp_path / "flat.csv"
    covariate_table(40).assign(city=["a", "b"] * 20, gaps=[np.nan, 1.0, np.nan] + [2.0] * 37
                               ).to_csv(path, index=False)
    covariate_table(40).assign(flat=3.0).to_csv(flat, index=False)
    folder = tmp_path / "images" / "class0"
    folder.mkdir(parents=True)
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((4, 4), 60 * i, np.uint8)).save(folder / f"{i}.png")
    argv = [{"FOLDER": str(tmp_path / "images"), "FLAT": str(flat)}.get(a, a) for a in argv]
    data = [] if "--data" in argv else ["--data", str(path)]
    out = tmp_path / "run"
    assert main(["train", *data, *argv, "--epochs", "1", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_class_only_commands_refuse_a_covariate_run(covariate_run, tmp_path, capsys):
    capsys.readouterr()
    for argv, message in [
        (["sample", str(covariate_run), "--label", "1", "--out", str(tmp_path / "a.npy")],
         "--label draws a class, but this run is conditioned on the columns age,income"),
        (["reconstruct", str(covariate_run), "--as-label", "1", "--out", str(tmp_path / "b.npy")],
         "--as-label draws a class"),
        (["sample", str(covariate_run), "--condition", "height=2", "--out",
          str(tmp_path / "c.npy")], "'height' is not a condition column of this run (its "
                                    "columns: age, income)"),
        (["sample", str(covariate_run), "--condition", "age=old", "--out",
          str(tmp_path / "d.npy")], "--condition age=old: not a number"),
        (["explore", str(covariate_run)], "the explorer does not show models conditioned on "
                                          "covariates"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())
    # what works: reconstructions and codes given each row's own covariates
    assert main(["reconstruct", str(covariate_run), "--num", "5",
                 "--out", str(tmp_path / "r.npy")]) == 0
    assert np.load(tmp_path / "r.npy").shape == (5, 2)
    assert main(["encode", str(covariate_run), "--out", str(tmp_path / "z.npy")]) == 0
    assert np.load(tmp_path / "z.npy").shape[1] == 2


def test_condition_columns_in_a_toml_config_and_on_a_mixed_type_table(tmp_path, capsys):
    """The config file form; a --column-types table keeps its own types for x, the condition
    columns leave it before the types are inferred."""
    path = tmp_path / "mixed.csv"
    covariate_table(80).assign(city=["a", "b", "c", "d"] * 20).to_csv(path, index=False)
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\nname = "{path}"\ncolumn_types = "auto"\n'
                      'condition_columns = ["age"]\n\n[model]\nconditional = true\n'
                      'hidden = [16]\nlatent_dim = 2\n\n[train]\nepochs = 2\nbatch_size = 32\n')
    assert load_config_file(config).data.condition_columns == ("age",)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    import vaekit

    run = vaekit.load(out)
    assert run.data.column_names == ("income", "x1", "x2", "city")
    assert run.config.model.columns == ("numeric", "numeric", "numeric", "categorical:4")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--num-samples", "5", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["condition_columns"] == ["age"]
    from vaekit.data import load_dataset

    with pytest.raises(DataError, match="drop it from --column-types"):
        load_dataset(str(path), column_types="age=numeric", condition_columns=("age",))


def test_resume_continues_exactly_with_the_covariates(tmp_path, covariate_csv):
    from vaekit.training import Trainer

    cfg = config_from_dict({"data": {"name": str(covariate_csv), "condition_columns": ["age"]},
                            "model": {"conditional": True, "hidden": [16], "latent_dim": 2},
                            "train": {"epochs": 2, "report": False, "batch_size": 32}})
    quiet = dict(progress=False, log=lambda _m: None, callbacks=[])
    straight = Trainer(cfg, tmp_path / "a", **quiet)
    straight.run_epoch()
    straight.run_epoch()
    interrupted = Trainer(cfg, tmp_path / "b", **quiet)
    interrupted.train_epoch(num_batches=3)
    interrupted.save_checkpoint()
    resumed = Trainer(cfg, tmp_path / "b", resume=True, **quiet)
    assert resumed.config.data.condition_mean == straight.config.data.condition_mean
    resumed.run_epoch()
    resumed.run_epoch()
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
