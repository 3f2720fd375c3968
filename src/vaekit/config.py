"""Typed, validated run configuration.

A run is described by :class:`RunConfig` (``data``, ``model``, ``train`` sections, defined in
:mod:`vaekit.config_sections`). Configs are strict pydantic models: unknown keys and wrong types
are rejected with a message naming the key, and they round-trip through JSON/TOML. Rules
between options belong to the option's owner (a model family's ``config_errors``, the
objectives' :func:`vaekit.objectives.config_errors`) and are collected here. Fields left as
``None``/``"auto"`` are filled by :func:`resolve` from the data set (the resolved config is what
a run directory stores)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, field_validator, model_validator

from .config_sections import (CONFIG_VERSION, MAX_SEED, DataConfig, ModelConfig,  # noqa: F401
                              TrainConfig, _Strict, choices)
from .errors import ConfigError


class RunConfig(_Strict):
    version: int = CONFIG_VERSION
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if not 1 <= version <= CONFIG_VERSION:
            raise ValueError(f"config version {version} is not supported by this vaekit (it reads "
                             f"version {CONFIG_VERSION}); upgrade vaekit or write a version "
                             f"{CONFIG_VERSION} config")
        return version

    @model_validator(mode="after")
    def _compatible_sections(self) -> "RunConfig":
        from .likelihoods import needs_levels

        likelihood, data = self.model.likelihood, self.data
        if needs_levels(likelihood) and data.binarize not in ("auto", "none"):
            raise ValueError(f"likelihood '{likelihood}' models grey levels; the data cannot "
                             f"be binarized (--binarize {data.binarize}): use --likelihood "
                             "bernoulli for binarized data")
        if data.bits is not None and likelihood != "auto" and not needs_levels(likelihood):
            raise ValueError(f"--bits {data.bits} quantizes the data for a discrete grey-level "
                             f"likelihood (discretized-logistic, discretized-logistic-mixture, "
                             f"categorical); likelihood '{likelihood}' does not model levels")
        if (data.bits is not None and self.model.levels is not None
                and self.model.levels != 2**data.bits):
            raise ValueError(f"levels {self.model.levels} disagrees with bits {data.bits} "
                             f"(2^{data.bits} = {2**data.bits} levels)")
        from .families import FAMILIES
        from .objectives import config_errors as objective_errors

        # the rules of the options' owners: the objective's, then the model family's
        for rules in (objective_errors, FAMILIES[self.model.family_name].config_errors):
            error = rules(self.model, self.train, self.data)
            if error:
                raise ValueError(error)
        return self


def _format_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = _one_line(".".join(str(p) for p in e["loc"]) or "config")
        if e["type"] == "extra_forbidden":
            parent = _section_fields(e["loc"][:-1])
            valid = ", ".join(parent) if parent else ""
            parts.append(f"unknown key '{key}'" + (f" (valid keys: {valid})" if valid else ""))
        else:
            parts.append(f"{key}: {_one_line(e['msg'])}")
    return "invalid config: " + "; ".join(parts)


def _one_line(text: str) -> str:
    """Keys and values from a user's file may hold line breaks; error messages must not."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _section_fields(loc: tuple) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type)
                                 and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Validates a nested dict into a :class:`RunConfig`; raises ConfigError naming the key."""
    if not isinstance(values, dict):
        raise ConfigError("invalid config: expected a table/object at the top level")
    try:
        return RunConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config_file(path: str | Path) -> RunConfig:
    """Reads a TOML (``.toml``) or JSON (``.json``) config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"{path}: unsupported config type '{path.suffix}' (use .toml or .json)")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ConfigError(f"{path}: cannot parse config ({_one_line(str(err))})") from None
    return config_from_dict(values)


def merge(config: RunConfig, overrides: dict[str, dict[str, Any]]) -> RunConfig:
    """Returns ``config`` with ``overrides`` (``{"train": {"epochs": 3}, ...}``) applied and
    validated."""
    values = config.model_dump()
    for section, fields in overrides.items():
        values.setdefault(section, {}).update(fields)
    return config_from_dict(values)


def resolve(config: RunConfig, *, defaults: dict[str, Any], value_kind: str,
            levels: int | None = None, name: str = "the data") -> RunConfig:
    """Fills every ``None``/``"auto"`` field from the data set:

    - likelihood: the data set's default, else Bernoulli for binary and grey-level [0, 1] data
      and Gaussian for real values;
    - binarize: ``dynamic`` for grey-level data under a Bernoulli likelihood, else ``none``;
    - likelihood ``table`` when the column types are given (``model.columns``);
    - standardize: on for real-valued data (tables), whose columns come in arbitrary units,
      except under the table likelihood, which standardizes its numeric columns itself;
    - hidden sizes, latent dimension and epochs from the data set's ``defaults``
      (:func:`vaekit.data.dataset_defaults`);
    - levels of a discrete grey-level likelihood: 2^bits with ``data.bits``, else the data
      set's own number of grey levels ``levels`` (17 for digits, 256 for 8-bit images)."""
    model, train, data = config.model, config.train, config.data
    likelihood = model.likelihood
    if likelihood == "auto" and model.columns is not None:
        likelihood = "table"
    if likelihood == "auto":
        likelihood = defaults.get("likelihood") or (
            "gaussian" if value_kind == "real" else "bernoulli")
    binarize = data.binarize
    if binarize == "auto":
        binarize = "dynamic" if (likelihood == "bernoulli" and value_kind == "unit") else "none"
    from .likelihoods import needs_levels

    num_levels = model.levels
    if needs_levels(likelihood):
        if value_kind == "binary" or levels == 2:
            raise ConfigError(f"likelihood '{likelihood}' models grey levels but {name} is "
                              "binary; use --likelihood bernoulli")
        if value_kind == "real":
            raise ConfigError(f"likelihood '{likelihood}' models grey levels in [0, 1] but "
                              f"{name} has real values; use --likelihood gaussian")
        if data.bits is not None:
            if levels is not None and 2**data.bits > levels:
                raise ConfigError(f"--bits {data.bits} asks for {2**data.bits} levels but "
                                  f"{name} has only {levels}; use --bits "
                                  f"{max(1, levels.bit_length() - 1)} or fewer")
            num_levels = 2**data.bits
        elif num_levels is None:
            if levels is None:
                raise ConfigError(f"likelihood '{likelihood}' needs the number of grey levels "
                                  f"of {name}, which is not known: pass --bits N (2^N levels)")
            num_levels = levels
    return merge(config, {
        "data": {"binarize": binarize},
        "model": {
            "likelihood": likelihood,
            "levels": num_levels,
            "hidden": model.hidden if model.hidden is not None else defaults["hidden"],
            "latent_dim": model.latent_dim or defaults["latent_dim"],
            "standardize": (value_kind == "real" and model.columns is None)
                           if model.standardize is None else model.standardize,
        },
        "train": {"epochs": train.epochs or defaults["epochs"]},
    })


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
