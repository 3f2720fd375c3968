"""A scikit-learn estimator over vaekit: :class:`VariationalAutoencoder`.

It is a thin layer: the constructor's arguments become a :class:`~vaekit.config.RunConfig`,
``fit`` trains with :class:`vaekit.training.Trainer` (the same loop and speed as
``vaekit train``), ``score_samples`` is the importance-sampled log p(x) of
:func:`vaekit.evaluation.log_likelihood` with one set of draws shared by all rows, so that each
row's score depends on that row alone (:mod:`vaekit.sklearn_scores`), and ``save`` writes a run
directory that :func:`vaekit.load` and ``vaekit evaluate`` read (no pickles).

Tables come as they are: a pandas DataFrame with numeric, boolean, categorical and missing
values is modelled by the table likelihood (:mod:`vaekit.tables`), whose log-likelihood counts
the observed entries only; :meth:`VariationalAutoencoder.impute` fills the missing ones.
Arrays are tables of numeric columns.

Quick use::

    from vaekit.sklearn import VariationalAutoencoder
    vae = VariationalAutoencoder(latent_dim=2, epochs=50, random_state=0).fit(df)
    codes = vae.transform(df)               # posterior means E_q[z|x], [N, L]
    anomaly_score = -vae.score_samples(df)  # -log p(x), importance-sampled
    completed = vae.impute(df)              # missing entries filled"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from .batched import map_batches, seeded
from .config import RunConfig, config_from_dict
from .data.dataset import Dataset
from .errors import VaekitError
from .families import build_model
from .objectives import weight_terms
from .posteriors import posterior_mean
from .sklearn_frames import fill_missing, validated_rows
from .sklearn_runs import ESTIMATOR_FILE, load_estimator, save_estimator  # noqa: F401
from .sklearn_scores import row_log_likelihood
from .tables import TableDistribution

MAX_SEED = 2**31 - 1

# Checks of sklearn.utils.estimator_checks.check_estimator expected to fail: none (kept for code
# that passes it as check_estimator(..., expected_failed_checks=EXPECTED_FAILED_CHECKS))
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


class VariationalAutoencoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A VAE p(x, z) = p(z) p(x|z) with amortised posterior q(z|x) (Kingma & Welling 2014)
    trained by maximising the ELBO (or the IWAE bound), as a scikit-learn transformer.

    Parameters (all are :class:`~vaekit.config.RunConfig` options):

    - ``latent_dim``, ``hidden``: the dimension of z and the MLP hidden sizes;
    - ``prior``, ``posterior``: registered names (``vaekit.priors.PRIORS``,
      ``vaekit.posteriors.POSTERIORS``);
    - ``likelihood``: ``auto`` (the table likelihood: typed columns, missing values) or a
      likelihood for numeric arrays (``gaussian``, ``bernoulli``, ``continuous-bernoulli``);
    - ``column_types``: declared column types, ``{"age": "numeric", "city": "categorical"}``
      or ``"age=numeric,city=categorical"`` (``count`` and ``binary`` too); the rest are read
      from the DataFrame's dtypes; for an array, keys are column indices;
    - ``epochs``, ``batch_size`` (at most the number of rows), ``lr``, ``beta``,
      ``objective`` (``elbo``, ``iwae``, ``iwae-dreg``), ``num_samples`` (its K);
    - ``score_num_samples``: K of the importance-sampled log p(x) of :meth:`score_samples`;
    - ``random_state``: seeds initialisation, batches and every Monte Carlo estimate;
    - ``device``: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ...;
    - ``options``: any other config keys, ``{"model": {"flow_steps": 8}, "train": {...}}``;
    - ``verbose``: 1 prints the train ELBO per epoch, 2 also progress bars.

    Attributes after ``fit``: ``model_`` (the :class:`~vaekit.model.VAE`), ``config_`` (the
    resolved config), ``schema_`` (the table's columns), ``history_`` (train ELBO terms per
    epoch), ``n_features_in_``, ``feature_names_in_`` (DataFrames with string column names)."""

    def __init__(self, latent_dim=8, hidden=(128, 128), prior="normal", posterior="gaussian",
                 likelihood="auto", column_types=None, epochs=100, batch_size=128, lr=1e-3,
                 beta=1.0, objective="elbo", num_samples=1, score_num_samples=100,
                 random_state=None, device="auto", options=None, verbose=0):
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.prior = prior
        self.posterior = posterior
        self.likelihood = likelihood
        self.column_types = column_types
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta = beta
        self.objective = objective
        self.num_samples = num_samples
        self.score_num_samples = score_num_samples
        self.random_state = random_state
        self.device = device
        self.options = options
        self.verbose = verbose

    # -- configuration ---------------------------------------------------------------------
    @property
    def _is_table(self) -> bool:
        return self.likelihood in ("auto", "table")

    def _config(self, *, columns=None, num_rows: int | None = None, seed: int = 0) -> RunConfig:
        """The RunConfig of the parameters; ValueError naming the bad one."""
        if isinstance(self.hidden, (int, np.integer)):
            hidden = [int(self.hidden)]
        else:
            try:
                hidden = [int(h) for h in self.hidden]
            except (TypeError, ValueError):
                raise ValueError(f"hidden must be a sequence of layer sizes, got "
                                 f"{self.hidden!r}") from None
        batch_size = self.batch_size
        if num_rows is not None and isinstance(batch_size, (int, np.integer)):
            batch_size = max(1, min(int(batch_size), num_rows))
        values = {
            "data": {"name": "sklearn"},
            "model": {"latent_dim": self.latent_dim, "hidden": hidden, "prior": self.prior,
                      "posterior": self.posterior,
                      "likelihood": "table" if self._is_table else self.likelihood,
                      "columns": list(columns) if columns is not None else
                      (["numeric"] if self._is_table else None)},
            "train": {"epochs": self.epochs, "batch_size": batch_size, "lr": self.lr,
                      "beta": self.beta, "objective": self.objective,
                      "num_samples": self.num_samples, "seed": seed, "device": self.device,
                      "report": False},
        }
        for section, fields in (self.options or {}).items():
            if not isinstance(fields, dict):
                raise ValueError(f"options['{section}'] must be a dict of config keys")
            values.setdefault(section, {}).update(fields)
        try:
            config = config_from_dict(values)
        except VaekitError as err:
            raise ValueError(str(err)) from None
        if not isinstance(self.score_num_samples, (int, np.integer)) or self.score_num_samples < 1:
            raise ValueError(f"score_num_samples must be a positive integer, got "
                             f"{self.score_num_samples!r}")
        return config

    # -- data ------------------------------------------------------------------------------
    def _dataset(self, rows: torch.Tensor) -> Dataset:
        from .data.arrays import _infer_value_kind

        held = rows[: min(len(rows), 1000)]  # nothing is validated during fit; checks only
        value_kind = "real" if self._is_table else _infer_value_kind([rows.numpy()])
        return Dataset("sklearn", rows, held, held, None, None, None, value_kind, False)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Trains a fresh VAE on the rows of ``X`` for ``epochs`` epochs; returns self."""
        from .training import Trainer
        from .training.step import resolve_device

        self._config()  # parameters checked before any work
        rows = validated_rows(self, X, reset=True)
        seed = int(check_random_state(self.random_state).randint(MAX_SEED))
        columns = self.schema_.column_specs if self._is_table else None
        config = self._config(columns=columns, num_rows=len(rows), seed=seed)
        try:
            device = resolve_device(config.train.device)
        except VaekitError as err:
            raise ValueError(str(err)) from None
        log = print if self.verbose else (lambda _message: None)
        with seeded(seed, device):  # the caller's global RNG state is left as it was
            trainer = Trainer(config, dataset=self._dataset(rows), progress=self.verbose > 1,
                              log=log, callbacks=[])
            history = []
            for epoch in range(config.train.epochs):
                history.append(trainer.train_epoch())
                log(f"epoch {epoch + 1}/{config.train.epochs}  train ELBO "
                    f"{history[-1]['train_elbo']:.3f}")
        self.model_ = trainer.eval_model.eval()
        self.config_ = trainer.config
        self.history_ = history
        self.seed_ = seed
        return self

    @property
    def _n_features_out(self) -> int:
        return self.config_.model.latent_dim

    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    # -- transforms ------------------------------------------------------------------------
    def transform(self, X):
        """The posterior means E_q[z|x] of the rows of X: ``[N, latent_dim]`` float64."""
        check_is_fitted(self)
        rows = validated_rows(self, X, reset=False)
        means = map_batches(lambda x: posterior_mean(self.model_.encode(x)), rows,
                            batch_size=1000, seed=self.seed_, device=self._device())
        return means.double().numpy()

    def inverse_transform(self, X):
        """The decoder's prediction at codes ``X [N, latent_dim]``: E[x|z] for numeric
        columns, the most probable value for binary and categorical ones (a table like the
        training data)."""
        check_is_fitted(self)
        z = check_array(X, dtype=np.float64)
        if z.shape[1] != self._n_features_out:
            raise ValueError(f"X has {z.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self._n_features_out} features as input (the latent "
                             "dimension).")
        z = torch.as_tensor(z, dtype=torch.float32, device=self._device())
        with torch.no_grad():
            p_x = self.model_.decode(z.unsqueeze(0))  # batch [1, N]
            if isinstance(p_x, TableDistribution):
                rows = p_x.point_estimate(torch.ones(z.shape[:1], device=z.device)[None])
            else:
                rows = p_x.mean[0]
        return self._decode(rows)

    def _decode(self, rows: torch.Tensor):
        rows = rows.double().cpu().numpy().reshape(len(rows), -1)
        return self.schema_.decode(rows) if self._is_table else rows

    # -- densities and scores --------------------------------------------------------------
    def score_samples(self, X, num_samples: int | None = None):
        """log p(x) of each row, importance-sampled with K = ``num_samples`` (default
        ``score_num_samples``) draws from q(z|x) (Burda et al. 2016); for a row with missing
        entries, log p(x_obs). ``-score_samples(X)`` is the anomaly score. ``[N]`` float64.

        The K draws come from one set of standard normal noise shared by all rows (fixed by
        ``random_state``), so a row scores the same alone, in any batch and in any order
        (:func:`vaekit.sklearn_scores.row_log_likelihood`)."""
        check_is_fitted(self)
        rows = validated_rows(self, X, reset=False)
        num_samples = self.score_num_samples if num_samples is None else num_samples
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        return row_log_likelihood(self.model_, rows, int(num_samples), self.seed_).numpy()

    def score(self, X, y=None):
        """The mean log p(x) over the rows of X (:meth:`score_samples`), in nats per row."""
        return float(np.mean(self.score_samples(X)))

    def reconstruction_error(self, X):
        """Per row, the squared error of the reconstruction E[x | z = E_q[z|x]]: summed over
        the observed entries, numeric columns in units of their standard deviation (tables),
        categories as the Brier score. The usual autoencoder anomaly score, for comparison
        with -score_samples. ``[N]`` float64."""
        check_is_fitted(self)
        rows = validated_rows(self, X, reset=False)

        def error(x):
            p_x = self.model_.decode(posterior_mean(self.model_.encode(x)))
            if isinstance(p_x, TableDistribution):
                return p_x.squared_error(x)
            return ((x - p_x.mean) ** 2).flatten(1).sum(1)

        return map_batches(error, rows, batch_size=1000, seed=self.seed_,
                           device=self._device()).double().numpy()

    # -- generation and imputation ---------------------------------------------------------
    def sample(self, n_samples: int = 1, random_state=None):
        """Draws x ~ p(x|z), z ~ p(z): ``n_samples`` rows like the training data."""
        check_is_fitted(self)
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        seed = int(check_random_state(random_state).randint(MAX_SEED))
        with seeded(seed, self._device()), torch.no_grad():
            z = self.model_.prior().sample((int(n_samples),))
            rows = self.model_.decode(z).sample()
        return self._decode(rows)

    def impute(self, X, num_imputations: int | None = None, num_samples: int = 100):
        """X with its missing entries (NaN, None) filled from p(x_mis | x_obs), estimated by
        self-normalised importance sampling with K = ``num_samples`` draws z_k ~ q(z|x_obs),
        w_k proportional to p(x_obs|z_k) p(z_k) / q(z_k|x_obs) (Mattei & Frellsen 2019):

        - ``num_imputations=None``: the conditional mean sum_k w_k E[x_mis|z_k] for numeric
          columns, the most probable value of sum_k w_k p(x_mis|z_k) for the others;
        - ``num_imputations=M``: a list of M tables, each a draw x_mis ~ p(x_mis|z_k) with k
          resampled by its weight (multiple imputation).

        Observed entries are returned unchanged."""
        check_is_fitted(self)
        if not self._is_table:
            raise ValueError("impute needs likelihood='auto' (the table likelihood counts only "
                             "observed entries)")
        for name, value in (("num_samples", num_samples), ("num_imputations", num_imputations)):
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        rows = validated_rows(self, X, reset=False)
        count = 1 if num_imputations is None else int(num_imputations)

        def fill(x):  # [B, D] -> [M, B, D]
            q_z = self.model_.encode(x)
            z = q_z.sample((int(num_samples),))  # [K, B, L]
            log_w = weight_terms(self.model_, x, q_z, z, q_z.log_prob(z)).log_w  # [K, B]
            weights = torch.softmax(log_w.double(), 0).float()
            p_x = self.model_.decode(z)
            if num_imputations is None:
                values = p_x.point_estimate(weights)[None]  # [1, B, D]
            else:
                draws = p_x.sample()  # [K, B, D]
                k = torch.multinomial(weights.T, count, replacement=True).T  # [M, B]
                values = draws[k, torch.arange(len(x), device=x.device)]  # [M, B, D]
            return torch.where(torch.isnan(x), values, x).transpose(0, 1)  # [B, M, D]

        filled = map_batches(fill, rows, batch_size=max(1, 20_000 // int(num_samples)),
                             seed=self.seed_, device=self._device())  # [N, M, D]
        tables = [fill_missing(X, rows, filled[:, m], self.schema_) for m in range(count)]
        return tables[0] if num_imputations is None else tables

    # -- persistence -----------------------------------------------------------------------
    def save(self, path) -> Path:
        """Writes a vaekit run directory (config, safetensors weights, the estimator's
        parameters and table schema as JSON; nothing pickled) that :func:`vaekit.load` and
        :meth:`load` read. Returns the directory."""
        check_is_fitted(self)
        return save_estimator(self, path)

    @classmethod
    def load(cls, path, device: str = "cpu") -> VariationalAutoencoder:
        """The estimator saved in ``path`` by :meth:`save`, fitted, on ``device``."""
        return load_estimator(cls, path, device)

    # -- scikit-learn protocol -------------------------------------------------------------
    def __getstate__(self):
        # the model as its config and weights: the module itself is rebuilt on unpickling
        state = super().__getstate__()
        if "model_" in state:
            state = dict(state)
            state["model_"] = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        return state

    def __setstate__(self, state):
        weights = state.get("model_")
        if isinstance(weights, dict):
            state = dict(state)
            model = build_model(state["config_"].model, _data_shape(state))
            model.load_state_dict(weights)
            state["model_"] = model.eval()
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._is_table  # missing entries are part of the model
        return tags


def _data_shape(state: dict) -> tuple[int, ...]:
    return (len(state["schema_"].names),)


__all__ = ["EXPECTED_FAILED_CHECKS", "VariationalAutoencoder"]
