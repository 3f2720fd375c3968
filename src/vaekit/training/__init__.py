"""Training: the loop (:mod:`.loop`), one step's machinery (:mod:`.step`, :mod:`.precision`),
checkpoints (:mod:`.checkpoint`), stop signals (:mod:`.interrupts`), torchrun launching and the
resume policy (:mod:`.launch`), and the callbacks through which viewers watch a run
(:mod:`.callbacks`)."""

# imported on first use: vaekit.config reads the precision registry (train.precision) while it
# is being defined, before the loop (which needs the config) can be imported
_LAZY = {"Trainer": "loop", "train": "loop", "MAX_BAD_STEPS": "loop", "CHECKPOINT": "checkpoint",
         "EpochProgress": "checkpoint", "TrainingState": "checkpoint"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vaekit.training' has no attribute '{name}'")


__all__ = list(_LAZY)
