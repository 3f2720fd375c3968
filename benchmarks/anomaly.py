"""Anomaly detection with vaekit's log-likelihood against scikit-learn's detectors and PyOD's
VAE and AutoEncoder, side by side in one run: ROC-AUC and average precision (anomalies are the
positive class, scores higher = more anomalous). Not part of the tests.

Tasks (novelty detection: train on normal rows only, score held-out normal rows and anomalies):

- ``mnist``: one-class MNIST (Ruff et al. 2018): for each digit c, train on the training
  images of c, test on all 10,000 test images, the other nine digits being anomalies. Pixels
  in [0, 1] as they are (no contrast normalisation).
- ``breast-cancer``: scikit-learn's table; benign rows are normal; per seed half of them are
  held out for testing together with a random 10% of that many malignant rows.
- ``penguins``: the Palmer penguins (the ``palmerpenguins`` package; species dropped from the
  features, island and sex categorical, NaNs kept); for each species in turn its rows are the
  anomalies, half of the other two species' rows train, the other half are tested.

vaekit scores -log p(x) (``-score_samples``, importance-sampled, K = 100) and, as a second
row, the reconstruction error. Baselines get standardized numeric features, one-hot
categories and mean/most-frequent imputation (they cannot read NaN). Run::

    pip install -e '.[bench]'
    python benchmarks/anomaly.py --task breast-cancer penguins --out /tmp/sklearn-runs/anomaly
    python benchmarks/anomaly.py --task mnist --mnist-dir ../shared/data/mnist \
        --out /tmp/sklearn-runs/anomaly

Each task writes ``<task>.json`` (every score) and the script prints a markdown table; rows
already in the JSON are reused, so an interrupted run continues."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import OneClassSVM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from vaekit.sklearn import VariationalAutoencoder  # noqa: E402


# -- detectors: fit(x_train) -> scores(x_test), higher = more anomalous ----------------------

def vaekit_detector(options: dict):
    def fit_score(train, test, seed):
        vae = VariationalAutoencoder(random_state=seed, **options).fit(train)
        return {"vaekit -log p(x)": -vae.score_samples(test),
                "vaekit reconstruction error": vae.reconstruction_error(test)}
    return fit_score


def pca_reconstruction_error(train, test, seed):
    pca = PCA(n_components=0.9, random_state=seed).fit(train)
    return ((test - pca.inverse_transform(pca.transform(test))) ** 2).sum(1)


def sklearn_detectors(image: bool):
    # 784 pixels: the Gaussian mixture runs on 50 principal components (a full covariance of
    # every pixel is singular and slow)
    gmm = (lambda seed: make_pipeline(PCA(50, random_state=seed),
                                      GaussianMixture(5, random_state=seed))) if image else \
          (lambda seed: GaussianMixture(3, covariance_type="full", reg_covar=1e-3,
                                        random_state=seed))
    return {
        "IsolationForest": lambda tr, te, s: -IsolationForest(random_state=s).fit(tr)
        .score_samples(te),
        "GaussianMixture": lambda tr, te, s: -gmm(s).fit(tr).score_samples(te),
        "OneClassSVM": lambda tr, te, s: -OneClassSVM(nu=0.1, gamma="scale").fit(tr)
        .score_samples(te),
        "LocalOutlierFactor": lambda tr, te, s: -LocalOutlierFactor(novelty=True).fit(tr)
        .score_samples(te),
        "PCA reconstruction error": pca_reconstruction_error,
    }


def pyod_detectors(epochs: dict):
    try:
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.vae import VAE
    except ImportError:
        print("pyod is not installed (pip install -e '.[bench]'): its rows are skipped")
        return {}

    def make(cls, **options):
        def fit_score(train, test, seed):
            detector = cls(random_state=seed, verbose=0, **options).fit(train.astype(np.float32))
            return detector.decision_function(test.astype(np.float32))
        return fit_score

    return {"PyOD VAE": make(VAE, **({"epoch_num": epochs["vae"]} if epochs.get("vae") else {})),
            "PyOD AutoEncoder": make(AutoEncoder, **({"epoch_num": epochs["ae"]}
                                                     if epochs.get("ae") else {}))}


# -- tasks -------------------------------------------------------------------------------------

def mnist_tasks(args):
    from vaekit.data.idx import read_idx

    d = Path(args.mnist_dir)
    x_train = read_idx(d / "train-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
    y_train = read_idx(d / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(d / "t10k-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
    y_test = read_idx(d / "t10k-labels-idx1-ubyte.gz")
    for digit in args.digits:
        train = x_train[y_train == digit][: args.max_train]
        yield f"digit {digit}", 0, train, x_test, (y_test != digit).astype(int), None


def table_features(train: pd.DataFrame, test: pd.DataFrame):
    """Baselines' view of a table: standardized numbers, one-hot categories, imputed."""
    numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in train.columns if c not in numeric]
    columns = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
        ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="ignore",
                                                    sparse_output=False)), categorical)])
    return columns.fit_transform(train), columns.transform(test)


def breast_cancer_tasks(args):
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame, malignant = data.data, data.target == 0
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        normal = rng.permutation(np.flatnonzero(~malignant))
        train_idx, normal_test = normal[: len(normal) // 2], normal[len(normal) // 2:]
        anomalies = rng.choice(np.flatnonzero(malignant), max(1, len(normal_test) // 10),
                               replace=False)
        test_idx = np.concatenate([normal_test, anomalies])
        labels = np.r_[np.zeros(len(normal_test), int), np.ones(len(anomalies), int)]
        yield ("malignant", seed, frame.iloc[train_idx], frame.iloc[test_idx], labels, "table")


def penguin_tasks(args):
    from palmerpenguins import load_penguins

    penguins = load_penguins()
    features = penguins.drop(columns=["species"])
    for species in sorted(penguins["species"].unique()):
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            normal = rng.permutation(np.flatnonzero(penguins["species"] != species))
            train_idx, normal_test = normal[: len(normal) // 2], normal[len(normal) // 2:]
            anomalies = np.flatnonzero(penguins["species"] == species)
            test_idx = np.concatenate([normal_test, anomalies])
            labels = np.r_[np.zeros(len(normal_test), int), np.ones(len(anomalies), int)]
            yield (species, seed, features.iloc[train_idx], features.iloc[test_idx], labels,
                   "table")


TASKS = {"mnist": mnist_tasks, "breast-cancer": breast_cancer_tasks, "penguins": penguin_tasks}


def vaekit_options(task: str, args) -> dict:
    if task == "mnist":
        return dict(latent_dim=args.latent_dim, hidden=(256,), epochs=args.epochs,
                    batch_size=args.batch_size, device=args.device, likelihood=args.mnist_likelihood,
                    score_num_samples=args.score_samples)
    return dict(latent_dim=4, hidden=(64, 64), epochs=args.table_epochs, batch_size=32,
                lr=3e-3, device=args.device)


def run_task(task: str, args) -> dict:
    out_file = Path(args.out) / f"{task}.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    image = task == "mnist"
    detectors = {"vaekit": vaekit_detector(vaekit_options(task, args)),
                 **sklearn_detectors(image),
                 **pyod_detectors({"vae": args.pyod_vae_epochs, "ae": args.pyod_ae_epochs})}
    detectors = {k: v for k, v in detectors.items() if not args.only or k in args.only}
    for name, seed, train, test, labels, kind in TASKS[task](args):
        key = f"{name} / seed {seed}"
        row = results.setdefault(key, {})
        done = row.setdefault("_done", [])  # detectors already run (vaekit writes two rows)
        for detector, fit_score in detectors.items():
            if detector in done:
                continue
            if kind == "table" and detector != "vaekit":
                train_x, test_x = table_features(train, test)
            else:
                train_x, test_x = (np.asarray(train, dtype=np.float64),
                                   np.asarray(test, dtype=np.float64)) if kind is None else \
                                  (train, test)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores = fit_score(train_x, test_x, seed)
            seconds = time.perf_counter() - start
            for label, s in (scores.items() if isinstance(scores, dict) else [(detector, scores)]):
                s = np.nan_to_num(np.asarray(s, dtype=np.float64), nan=np.inf, posinf=1e300,
                                  neginf=-1e300)
                row[label] = {"roc_auc": roc_auc_score(labels, s),
                              "average_precision": average_precision_score(labels, s),
                              "seconds": seconds}
                print(f"{task} {key:24s} {label:28s} ROC-AUC {row[label]['roc_auc']:.3f}  "
                      f"AP {row[label]['average_precision']:.3f}  {seconds:.1f}s", flush=True)
            done.append(detector)
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(json.dumps(results, indent=1))
    return results


def table(task: str, results: dict) -> str:
    """Markdown: one row per detector, one column per task group (mean over seeds), then the
    mean over groups."""
    groups = sorted({key.split(" / ")[0] for key in results})
    detectors = list(dict.fromkeys(d for row in results.values() for d in row if d != "_done"))
    lines = [f"| {task}: ROC-AUC (AP) | " + " | ".join(groups) + " | mean |",
             "| --- |" + " --- |" * (len(groups) + 1)]
    for detector in detectors:
        cells, aucs, aps = [], [], []
        for group in groups:
            rows = [r[detector] for k, r in results.items()
                    if k.split(" / ")[0] == group and detector in r]
            if not rows:
                cells.append("")
                continue
            auc = np.mean([r["roc_auc"] for r in rows])
            ap = np.mean([r["average_precision"] for r in rows])
            aucs.append(auc)
            aps.append(ap)
            cells.append(f"{auc:.3f} ({ap:.3f})")
        mean = f"**{np.mean(aucs):.3f}** ({np.mean(aps):.3f})" if aucs else ""
        lines.append(f"| {detector} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--out", default="/tmp/sklearn-runs/anomaly")
    parser.add_argument("--mnist-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--max-train", type=int, default=None,
                        help="first N training images of the digit (default: all, ~6000)")
    parser.add_argument("--epochs", type=int, default=10, help="vaekit epochs on MNIST")
    parser.add_argument("--latent-dim", type=int, default=16, help="vaekit latent_dim on MNIST")
    parser.add_argument("--batch-size", type=int, default=128, help="vaekit batch on MNIST")
    parser.add_argument("--mnist-likelihood", default="auto",
                        help="vaekit likelihood on MNIST: auto (per-pixel Gaussian), "
                             "continuous-bernoulli, gaussian")
    parser.add_argument("--score-samples", type=int, default=100,
                        help="K of vaekit's importance-sampled log p(x) on MNIST")
    parser.add_argument("--table-epochs", type=int, default=150)
    parser.add_argument("--pyod-vae-epochs", type=int, default=None, help="default: PyOD's (30)")
    parser.add_argument("--pyod-ae-epochs", type=int, default=None, help="default: PyOD's (10)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the table tasks")
    parser.add_argument("--only", nargs="*", help="run only these detectors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (small networks: one is fastest on a shared CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for task in args.task:
        results = run_task(task, args)
        print("\n" + table(task, results) + "\n", flush=True)


if __name__ == "__main__":
    main()
