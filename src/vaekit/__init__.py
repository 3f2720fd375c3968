"""vaekit: Variational Autoencoders that are correct, fast and honest.

Quick use::

    import vaekit
    run_dir = vaekit.train()                 # embedded digits, ~1 minute on a laptop CPU
    model = vaekit.load(run_dir)
    q_z = model.encode(x)                    # q(z|x), a torch distribution
    p_x = model.decode(q_z.rsample())        # p(x|z)
    vaekit.elbo(model, x)                    # per-example ELBO in nats
"""

__version__ = "0.1.0"

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from .objectives import elbo, elbo_terms, iwae_bound, log_importance_weights  # noqa: E402

_LAZY = {"load": "runs", "Trainer": "training", "train": "training"}


def __getattr__(name: str):
    # training and run loading pull in data loaders and plotting: imported on first use so
    # `import vaekit` stays light
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vaekit' has no attribute '{name}'")

__all__ = [
    "DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "Trainer", "elbo", "elbo_terms",
    "iwae_bound", "load", "log_importance_weights", "train", "__version__",
]
