"""The training flags of ``vaekit train``: one row per flag, naming the config key it sets
(``--latent-dim`` -> ``model.latent_dim``), so a flag and its config-file key are one option.
Valid values shown in the help are read from the option's registry
(:func:`vaekit.config.choices`); the config validates them."""

from __future__ import annotations

import argparse

from .config import choices


def _one_of(section: str, key: str) -> str:
    """The valid values of a config option for the help text; the config validation checks
    them (one message for the command line and config files alike)."""
    return "{" + ",".join(choices(section, key)) + "}"


def _csv_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    return values


def _csv_names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(","))  # the config refuses empty names


# (flag, config section, config key, argparse kwargs) for every training option
TRAIN_OPTIONS = [
    ("--data", "data", "name", dict(help="digits (default, embedded), mnist, fashion-mnist, "
                                         "binarized-mnist, omniglot, caltech101-silhouettes, "
                                         "frey-faces, dsprites, or a path to "
                                         ".npy/.npz/.csv/image folder")),
    ("--data-dir", "data", "data_dir", dict(help="directory holding the data set's files")),
    ("--binarize", "data", "binarize", dict(metavar=_one_of("data", "binarize"))),
    ("--val-fraction", "data", "val_fraction", dict(type=float)),
    ("--bits", "data", "bits", dict(type=int, metavar="N",
                                    help="quantize grey levels to 2^N levels (1..8) for a discrete "
                                         "likelihood, which then has 2^N bins")),
    ("--column-types", "data", "column_types",
     dict(metavar="auto|NAME=TYPE,...", help="read a .csv as a mixed-type table: auto (types "
          "from the values) or e.g. age=numeric,city=categorical,visits=count,smoker=binary; "
          "missing cells are left out of the likelihood")),
    ("--condition-columns", "data", "condition_columns",
     dict(type=_csv_names, metavar="NAME,...", help="with --conditional: condition on these "
          "numeric .csv columns (taken out of x, standardized with the training split's mean "
          "and std) instead of the class label")),
    ("--no-download", "data", "download", dict(action="store_const", const=False)),
    ("--arch", "model", "arch", dict(metavar=_one_of("model", "arch"))),
    ("--hidden", "model", "hidden", dict(type=_csv_ints, help="MLP hidden sizes, e.g. 400 or 512,256")),
    ("--latent-dim", "model", "latent_dim",
     dict(type=_csv_ints, help="size of z; a comma list for several stochastic layers, bottom "
                               "first: 100,50 is z1 (100 units) under z2 (50)")),
    ("--layer-hidden", "model", "layer_hidden",
     dict(type=_csv_ints, help="MLP hidden sizes between stochastic layers (default 100,100)")),
    ("--inference", "model", "inference",
     dict(metavar=_one_of("model", "inference"),
          help="posterior of a model with several stochastic layers")),
    ("--skip-decoder", "model", "skip_decoder",
     dict(action="store_const", const=True,
          help="several layers: the decoder reads every layer, p(x | z1, ..., zL), not z1 alone")),
    ("--activation", "model", "activation", dict(metavar=_one_of("model", "activation"))),
    ("--init", "model", "init", dict(metavar=_one_of("model", "init"),
                                     help="network weights: default (PyTorch) or xavier")),
    ("--likelihood", "model", "likelihood", dict(metavar=_one_of("model", "likelihood"))),
    ("--likelihood-components", "model", "likelihood_components",
     dict(type=int, metavar="J", help="logistics per pixel of discretized-logistic-mixture "
                                      "(default 10)")),
    ("--gaussian-scale", "model", "gaussian_scale", dict(metavar=_one_of("model", "gaussian_scale"))),
    ("--gaussian-init-scale", "model", "gaussian_init_scale", dict(type=float)),
    ("--gaussian-min-scale", "model", "gaussian_min_scale", dict(type=float)),
    ("--standardize", "model", "standardize", dict(action=argparse.BooleanOptionalAction,
                                                   help="standardize each input dimension "
                                                        "(default: on for real-valued tables)")),
    ("--prior", "model", "prior", dict(metavar=_one_of("model", "prior"))),
    ("--posterior", "model", "posterior", dict(metavar=_one_of("model", "posterior"))),
    ("--prior-components", "model", "prior_components",
     dict(type=int, help="mixture components (mog) or pseudo-inputs (vamp)")),
    ("--flow-steps", "model", "flow_steps", dict(type=int, help="steps of flow priors/posteriors")),
    ("--flow-hidden", "model", "flow_hidden", dict(type=int, help="hidden width of flow networks")),
    ("--no-vamp-init-from-data", "model", "vamp_init_from_data",
     dict(action="store_const", const=False, help="vamp: random pseudo-inputs, not data")),
    ("--gated", "model", "gated",
     dict(action="store_const", const=True,
          help="gated dense hidden layers h = (Wx+b)*sigmoid(Vx+c) (mlp)")),
    ("--vamp-clip-pseudo-inputs", "model", "vamp_clip_pseudo_inputs",
     dict(action="store_const", const=True,
          help="vamp: pseudo-inputs hardtanh(u) in [0, 1], for [0, 1] images")),
    ("--family", "model", "family",
     dict(metavar=_one_of("model", "family"), help="model family (vaekit.families); auto: "
          "conditional with --conditional, semi-supervised with --semi-supervised, else vae")),
    ("--conditional", "model", "conditional",
     dict(action="store_const", const=True, help="conditional VAE: q(z|x,y), p(x|z,y), y the "
                                                "class label (Sohn et al. 2015)")),
    ("--conditional-prior", "model", "conditional_prior",
     dict(nargs="?", const="class", metavar=_one_of("model", "conditional_prior"),
          help="learned prior p(z|y): class (default: one Gaussian per class) or net")),
    ("--semi-supervised", "model", "semi_supervised",
     dict(action="store_const", const=True,
          help="M2 (Kingma et al. 2014): classifier q(y|x) learned from --labels-per-class "
               "labels and the unlabelled rest")),
    ("--labels-per-class", "train", "labels_per_class",
     dict(type=int, help="semi-supervised: labelled training examples per class (10: 100 on "
                         "MNIST), chosen with --seed")),
    ("--classification-weight", "train", "classification_weight",
     dict(type=float, help="semi-supervised: alpha of the classification loss (default "
                           "0.1 N / N_labelled)")),
    ("--capacity-gamma", "train", "capacity_gamma",
     dict(type=float, help="--family annealed-capacity: gamma of gamma |KL - C| (default 1000)")),
    ("--capacity-max", "train", "capacity_max",
     dict(type=float, help="--family annealed-capacity: the final capacity C in nats (25)")),
    ("--capacity-steps", "train", "capacity_steps",
     dict(type=int, help="--family annealed-capacity: steps over which C rises from 0 (100000)")),
    ("--tc-beta", "train", "tc_beta",
     dict(type=float, help="--family beta-tcvae: weight of the total correlation (default 6)")),
    ("--tc-estimator", "train", "tc_estimator",
     dict(metavar=_one_of("train", "tc_estimator"), help="--family beta-tcvae: minibatch "
          "weighted (default) or stratified sampling")),
    ("--dip-type", "train", "dip_type",
     dict(metavar=_one_of("train", "dip_type"), help="--family dip-vae: covariance of the "
          "posterior means (i, default) or of q(z) (ii)")),
    ("--dip-lambda-od", "train", "dip_lambda_od",
     dict(type=float, help="--family dip-vae: weight of the off-diagonal covariances (10)")),
    ("--dip-lambda-d", "train", "dip_lambda_d",
     dict(type=float, help="--family dip-vae: weight of the diagonal (default 10 x lambda-od "
                           "for i, lambda-od for ii)")),
    ("--factor-gamma", "train", "factor_gamma",
     dict(type=float, help="--family factor-vae: weight of the discriminator's TC (35)")),
    ("--discriminator-lr", "train", "discriminator_lr",
     dict(type=float, help="--family factor-vae: Adam lr of the discriminator (1e-4)")),
    ("--epochs", "train", "epochs", dict(type=int)),
    ("--batch-size", "train", "batch_size", dict(type=int)),
    ("--lr", "train", "lr", dict(type=float)),
    ("--lr-schedule", "train", "lr_schedule", dict(metavar=_one_of("train", "lr_schedule"),
                                                   help="per-epoch schedule (iwae: Burda et al. "
                                                        "2016, scaled to --epochs)")),
    ("--lr-gamma", "train", "lr_gamma", dict(type=float, help="exponential: lr * gamma^epoch")),
    ("--lr-min", "train", "lr_min", dict(type=float, help="cosine: final lr; plateau: lowest lr")),
    ("--lr-factor", "train", "lr_factor", dict(type=float, help="plateau: lr *= factor")),
    ("--lr-patience", "train", "lr_patience", dict(type=int, help="plateau: epochs to wait")),
    ("--adam-betas", "train", "adam_betas", dict(type=_csv_floats, help="e.g. 0.9,0.999")),
    ("--adam-eps", "train", "adam_eps", dict(type=float, help="Adam epsilon (IWAE paper: 1e-4)")),
    ("--clip-grad-norm", "train", "clip_grad_norm",
     dict(type=float, help="clip the gradient's L2 norm (0: off)")),
    ("--ema", "train", "ema", dict(type=float, help="decay of a weight average used for "
                                                    "evaluation and saved (0: off)")),
    ("--early-stopping", "train", "early_stopping",
     dict(type=int, metavar="PATIENCE", help="stop after PATIENCE epochs without a better "
                                             "validation bound; keep the best epoch's weights")),
    ("--early-stopping-samples", "train", "early_stopping_samples",
     dict(type=int, metavar="K", help="that bound: 1 the ELBO (default), K > 1 IWAE_K")),
    ("--beta", "train", "beta", dict(type=float, help="KL weight in the loss (ELBO reported as is)")),
    ("--kl-warmup", "train", "kl_warmup_epochs", dict(type=float, help="epochs of linear KL warm-up")),
    ("--free-bits", "train", "free_bits", dict(type=float, help="nats per latent dimension")),
    ("--objective", "train", "objective", dict(metavar=_one_of("train", "objective"))),
    ("--num-samples", "train", "num_samples", dict(type=int)),
    ("--gradient-estimator", "train", "gradient_estimator",
     dict(metavar=_one_of("train", "gradient_estimator"),
          help="encoder gradient: pathwise (default) or score function (REINFORCE); "
               "score-baseline subtracts a leave-one-out mean over --num-samples >= 2")),
    ("--seed", "train", "seed", dict(type=int)),
    ("--device", "train", "device", dict()),
    ("--checkpoint-every", "train", "checkpoint_every_steps",
     dict(type=int, help="also checkpoint every N optimizer steps (default 0: once per epoch)")),
    ("--precision", "train", "precision", dict(metavar=_one_of("train", "precision"),
                                               help="autocast of the training step (mixed precision)")),
    ("--matmul-precision", "train", "matmul_precision",
     dict(metavar=_one_of("train", "matmul_precision"),
          help="float32 matrix products: highest (default), high, medium (bfloat16 products "
               "with float32 accumulation where the hardware has them)")),
    ("--compile", "train", "compile", dict(action="store_const", const=True,
                                           help="torch.compile the training loss")),
    ("--no-report", "train", "report", dict(action="store_const", const=False,
                                             help="do not write report.html at the end")),
    ("--tensorboard", "train", "tensorboard", dict(action="store_const", const=True,
                                                 help="log to TensorBoard (needs vaekit[tensorboard])")),
]


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Adds every row of :data:`TRAIN_OPTIONS` to ``parser``, stored as ``cfg_<key>`` only when
    given (so a config file's value stands unless a flag overrides it)."""
    for flag, _section, key, kwargs in TRAIN_OPTIONS:
        if kwargs.get("action") is None and "metavar" not in kwargs:
            kwargs = {**kwargs, "metavar": key.upper()}
        parser.add_argument(flag, dest=f"cfg_{key}", default=argparse.SUPPRESS, **kwargs)


def overrides(args: argparse.Namespace) -> dict[str, dict]:
    """The config sections and keys the given flags set: ``{"train": {"epochs": 3}, ...}``."""
    out: dict[str, dict] = {}
    for _flag, section, key, _kwargs in TRAIN_OPTIONS:
        if hasattr(args, f"cfg_{key}"):
            out.setdefault(section, {})[key] = getattr(args, f"cfg_{key}")
    return out
