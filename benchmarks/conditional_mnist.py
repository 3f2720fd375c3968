"""Measurements of conditional and semi-supervised runs on MNIST (docs/conditional.md).

``samples RUN``: a logistic regression trained on real MNIST training images (grey levels) says
which class each of ``--per-class`` samples drawn with ``vaekit sample --label c`` (E[x|z, y=c],
z ~ p(z|y)) belongs to; prints the fraction assigned to c for every c (and the classifier's
accuracy on the real test set, for context).

``baselines RUN``: for a semi-supervised run, the same classifier network as the run's q(y|x)
trained on the run's labelled examples alone (``labelled.json``), and a scikit-learn logistic
regression on the raw pixels of those examples; test classification errors next to the run's.

    OMP_NUM_THREADS=1 python benchmarks/conditional_mnist.py samples RUN [--per-class 100]
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


def sample_table(run_dir: str, per_class: int, num_train: int, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    run = vaekit.load(run_dir)
    data = real_mnist(run)
    began = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.train), generator=g)[:num_train]
    classifier = LogisticRegression(max_iter=300).fit(data.train[index].flatten(1).numpy(),
                                                      data.train_labels[index].numpy())
    real_accuracy = float((classifier.predict(data.test.flatten(1).numpy())
                           == data.test_labels.numpy()).mean())
    model = run.model
    y = torch.arange(model.num_classes).repeat_interleave(per_class)
    x = model.sample(len(y), y=y, generator=torch.Generator().manual_seed(seed))
    predicted = torch.as_tensor(classifier.predict(x.flatten(1).numpy()))
    per_class_rate = [float((predicted[y == c] == c).double().mean())
                      for c in range(model.num_classes)]
    return {"run": str(run_dir), "samples_per_class": per_class,
            "classifier": f"LogisticRegression on {num_train} real training images",
            "classifier_real_test_accuracy": real_accuracy,
            "assigned_to_their_class": per_class_rate, "min": min(per_class_rate),
            "mean": sum(per_class_rate) / len(per_class_rate),
            "seconds": time.perf_counter() - began}


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
    out = {"run": str(run_dir), "num_labelled": len(index)}
    # the run's own classifier q(y|x)
    out["m2_error"] = float((run.model.classify(x_test) != y_test).double().mean())
    # the same network trained on the labelled examples alone (dynamically binarized, Adam)
    torch.manual_seed(seed)
    net = classifier_net(run.config.model, run.model.data_shape)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        logits = net((torch.rand_like(x_l) < x_l).float())
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
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("samples")
    p.add_argument("run_dir")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--num-train", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("baselines")
    p.add_argument("run_dir")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "samples":
        result = sample_table(args.run_dir, args.per_class, args.num_train, args.seed)
    else:
        result = baselines(args.run_dir, args.epochs, args.seed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
