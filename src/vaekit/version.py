"""The version of vaekit (the package and every run directory record it)."""

__version__ = "0.1.0"
