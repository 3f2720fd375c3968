"""vaekit: Variational Autoencoders that are correct, fast and honest.

Quick use::

    import vaekit
    run_dir = vaekit.train()                 # embedded digits, ~1 minute on a laptop CPU
    run = vaekit.load(run_dir)               # a Run: config, model, data, history, results
    model = run.model
    q_z = model.encode(x)                    # q(z|x), a torch distribution
    p_x = model.decode(q_z.rsample())        # p(x|z)
    vaekit.elbo(model, x)                    # per-example ELBO in nats
    vaekit.log_likelihood(model, x, 5000)    # importance-sampled log p(x)
    vaekit.evaluate(run_dir)                 # everything `vaekit evaluate` reports

Layers (see docs/architecture.md): the math as flat modules (nets, posteriors, likelihoods,
priors, flows, model, objectives, evaluation, gradients), then ``vaekit.data``,
``vaekit.training``, :mod:`vaekit.run` and ``vaekit.view``, with the command line on top."""

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from .evaluation import log_likelihood  # noqa: E402
from .objectives import elbo, elbo_terms, iwae_bound, log_importance_weights  # noqa: E402
from .version import __version__  # noqa: E402
from .view import outputs as _outputs  # noqa: E402,F401  (registers the training's default viewers)

# training and runs pull in data loaders (and, at the end of training, plotting): imported on
# first use so `import vaekit` stays light
_LAZY = {"load": "run", "evaluate": "run", "Run": "run", "Trainer": "training", "train": "training"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vaekit' has no attribute '{name}'")


__all__ = [
    "DataConfig", "ModelConfig", "Run", "RunConfig", "TrainConfig", "Trainer", "elbo",
    "elbo_terms", "evaluate", "iwae_bound", "load", "log_importance_weights", "log_likelihood",
    "train", "__version__",
]
