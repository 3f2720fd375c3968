"""Measurements of conditional and semi-supervised runs on MNIST (docs/conditional.md).

``samples RUN``: a logistic regression trained on real MNIST training images (grey levels) says
which class each of ``--per-class`` samples drawn with ``vaekit sample --label c`` (E[x|z, y=c],
z ~ p(z|y)) belongs to; prints the fraction assigned to c for every c (and the classifier's
accuracy on the real test set, for context).

``features RUN --out FILE.npz``: the posterior means E_q[z|x] of an unconditional run (M1) for
its train, val and test splits with their labels and the training split's posterior standard
deviations (``train_scale``: training then draws z ~ q(z|x) afresh in every batch), as a data
file ``vaekit train --data`` reads: training M2 on it is the paper's stacked M1+M2.

``baselines RUN``: for a semi-supervised run, the same classifier network as the run's q(y|x)
trained on the run's labelled examples alone (``labelled.json``), and a scikit-learn logistic
regression on the raw pixels of those examples; test classification errors next to the run's.

    OMP_NUM_THREADS=1 python benchmarks/conditional_mnist.py samples RUN [--per-class 100]
                                                             [--judge lr|mlp|cnn]
                                                             [--temperature 1,0.8]
    OMP_NUM_THREADS=1 python benchmarks/conditional_mnist.py features M1_RUN --out m1.npz
    OMP_NUM_THREADS=1 python benchmarks/conditional_mnist.py baselines RUN [--epochs 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import vaekit
from vaekit.data import load_dataset


def real_mnist(run):
    dc = run.config.data
    return load_dataset(dc.name, dc.data_dir, val_fraction=dc.val_fraction,
                        split_seed=dc.split_seed, download=False)


class MLPJudge:
    """A 784-400-10 MLP trained with Adam on all real training images (grey levels), the
    judge of the samples (more accurate than a logistic regression)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 400),
                                       torch.nn.ReLU(), torch.nn.Linear(400, 10))
        optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        for _ in range(epochs):
            for batch in torch.randperm(len(x)).split(128):
                loss = torch.nn.functional.cross_entropy(self.net(x[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    @torch.no_grad()
    def predict(self, x) -> torch.Tensor:
        return self.net(torch.as_tensor(x).reshape(len(x), -1)).argmax(-1).numpy()


class CNNJudge(MLPJudge):
    """A small convolutional network (two 5x5 conv layers with max-pooling, then 128 units)
    trained with Adam on all real training images: about 99% accurate on the real test set, so
    that what it calls a wrong class is the sample's fault far more often than its own. The
    weights can be kept in a safetensors file (``cache``) and reused for every run judged."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int,
                 cache: str | None = None) -> None:
        nn = torch.nn
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                                 nn.Linear(128, 10))
        if cache and Path(cache).is_file():
            from safetensors.torch import load_file
            self.net.load_state_dict(load_file(cache))
            return
        optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        x = x.reshape(len(x), 1, 28, 28)
        for _ in range(epochs):
            for batch in torch.randperm(len(x)).split(128):
                loss = torch.nn.functional.cross_entropy(self.net(x[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        if cache:
            from safetensors.torch import save_file
            save_file(self.net.state_dict(), cache)

    @torch.no_grad()
    def predict(self, x) -> torch.Tensor:
        self.net.eval()
        x = torch.as_tensor(x).reshape(len(x), 1, 28, 28)
        return torch.cat([self.net(chunk).argmax(-1) for chunk in x.split(1000)]).numpy()


def sample_table(run_dir: str, per_class: int, num_train: int, seed: int, judge: str = "lr",
                 judge_epochs: int = 5, judge_cache: str | None = None,
                 temperatures: tuple[float, ...] = (1.0,)) -> dict:
    from sklearn.linear_model import LogisticRegression

    run = vaekit.load(run_dir)
    data = real_mnist(run)
    began = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    if judge == "cnn":
        classifier = CNNJudge(data.train, data.train_labels, judge_epochs, seed, judge_cache)
        name = (f"CNN (conv 32, conv 64, 128 units) trained {judge_epochs} epochs on "
                f"{len(data.train)} real training images")
    elif judge == "mlp":
        classifier = MLPJudge(data.train, data.train_labels, judge_epochs, seed)
        name = f"MLP 784-400-10 trained {judge_epochs} epochs on {len(data.train)} real training images"
    else:
        index = torch.randperm(len(data.train), generator=g)[:num_train]
        classifier = LogisticRegression(max_iter=300).fit(data.train[index].flatten(1).numpy(),
                                                          data.train_labels[index].numpy())
        name = f"LogisticRegression on {num_train} real training images"
    real_predicted = torch.as_tensor(classifier.predict(data.test.flatten(1).numpy()))
    real_accuracy = float((real_predicted == data.test_labels).double().mean())
    real_per_class = [float((real_predicted[data.test_labels == c] == c).double().mean())
                      for c in range(10)]
    model = run.model
    y = torch.arange(model.num_classes).repeat_interleave(per_class)
    tables = []
    for temperature in temperatures:  # the same z noise (seed) at every temperature
        x = model.sample(len(y), y=y, generator=torch.Generator().manual_seed(seed),
                         temperature=temperature)
        predicted = torch.as_tensor(classifier.predict(x.flatten(1).numpy()))
        rate = [float((predicted[y == c] == c).double().mean()) for c in range(model.num_classes)]
        tables.append({"temperature": temperature, "assigned_to_their_class": rate,
                       "min": min(rate), "mean": sum(rate) / len(rate)})
    return {"run": str(run_dir), "samples_per_class": per_class,
            "classifier": name,
            "classifier_real_test_accuracy": real_accuracy,
            "classifier_real_test_accuracy_per_class": real_per_class,
            **tables[0], "temperatures": tables[1:] if len(tables) > 1 else [],
            "seconds": time.perf_counter() - began}


def features(run_dir: str, out: str, *, with_scale: bool = True, drop_inactive: bool = False
             ) -> dict:
    """The M1 features of every split: the posterior means of q(z|x) (what M2 reads for
    validation and test) and, with ``with_scale``, the training split's posterior standard
    deviations as ``train_scale``, so that ``vaekit train`` draws the training features afresh
    in every batch, z ~ q(z|x), as the paper's code does. ``drop_inactive``: keep only the
    latent units whose posterior mean varies over the training split (variance above 0.01,
    Burda et al.'s active units), as the paper's code drops the units that do not."""
    import io

    import numpy as np

    from vaekit.storage import atomic_write_bytes

    run = vaekit.load(run_dir)
    arrays = {}
    for split in ("train", "val", "test"):
        x, labels = run.split(split)
        means, scales = [], []
        with torch.no_grad():
            for start in range(0, len(x), 1000):
                q_z = run.model.encode(x[start : start + 1000])
                means.append(q_z.mean)
                scales.append(q_z.stddev)
        arrays[split] = torch.cat(means).numpy().astype(np.float32)
        arrays[f"{split}_labels"] = labels.numpy().astype(np.int64)
        if split == "train" and with_scale:
            arrays["train_scale"] = torch.cat(scales).numpy().astype(np.float32)
    kept = np.arange(arrays["train"].shape[1])
    if drop_inactive:
        kept = np.flatnonzero(arrays["train"].var(0) > 0.01)
        for key in ("train", "val", "test", "train_scale"):
            if key in arrays:
                arrays[key] = np.ascontiguousarray(arrays[key][:, kept])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return {"out": out, "units_kept": len(kept), **{k: list(v.shape) for k, v in arrays.items()}}


def baselines(run_dir: str, epochs: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    from vaekit.semisupervised import classifier_net

    run = vaekit.load(run_dir)
    record = json.loads((Path(run_dir) / "labelled.json").read_text())
    data = real_mnist(run)
    index = torch.tensor(record["indices"])
    x_l, y_l = data.train[index], data.train_labels[index]
    x_test, _ = run.split("test")  # binarized as the run evaluates it
    y_test = data.test_labels
    binary = run.config.data.binarize != "none"
    out = {"run": str(run_dir), "num_labelled": len(index)}
    # the run's own classifier q(y|x)
    out["m2_error"] = float((run.model.classify(x_test) != y_test).double().mean())
    # the same network trained on the labelled examples alone (dynamically binarized, Adam)
    torch.manual_seed(seed)
    net = classifier_net(run.config.model, run.model.data_shape)
    if run.config.model.standardize:  # as the run: the training split's mean and deviation
        scale = data.train.std(0)
        net[0].loc.copy_(data.train.mean(0))
        net[0].scale.copy_(torch.where(scale > 1e-6, scale, torch.ones_like(scale)))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        logits = net((torch.rand_like(x_l) < x_l).float() if binary else x_l)
        loss = torch.nn.functional.cross_entropy(logits, y_l)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out["same_network_labelled_only_error"] = float(
            (net(x_test).argmax(-1) != y_test).double().mean())
    out["same_network_epochs"] = epochs
    lr = LogisticRegression(max_iter=2000).fit(x_l.flatten(1).numpy(), y_l.numpy())
    out["logistic_regression_labelled_only_error"] = float(
        (torch.as_tensor(lr.predict(data.test.flatten(1).numpy())) != y_test).double().mean())
    out["inputs"] = "binarized pixels" if binary else "the run's input features"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("samples")
    p.add_argument("run_dir")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--num-train", type=int, default=20000, help="lr judge: training images")
    p.add_argument("--judge", choices=["lr", "mlp", "cnn"], default="lr")
    p.add_argument("--judge-epochs", type=int, default=5)
    p.add_argument("--judge-cache", help="cnn judge: a safetensors file to reuse (or write)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", default="1",
                   help="sampling temperatures, comma-separated (e.g. 1,0.8,0.6; the first is "
                        "the headline)")
    p = sub.add_parser("features")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--no-train-scale", action="store_true",
                   help="write the posterior means alone (M2 then reads fixed features)")
    p.add_argument("--drop-inactive", action="store_true",
                   help="keep only the active latent units (posterior-mean variance > 0.01)")
    p = sub.add_parser("baselines")
    p.add_argument("run_dir")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "samples":
        result = sample_table(args.run_dir, args.per_class, args.num_train, args.seed,
                              args.judge, args.judge_epochs, args.judge_cache,
                              tuple(float(t) for t in args.temperature.split(",")))
    elif args.what == "features":
        result = features(args.run_dir, args.out, with_scale=not args.no_train_scale,
                          drop_inactive=args.drop_inactive)
    else:
        result = baselines(args.run_dir, args.epochs, args.seed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
