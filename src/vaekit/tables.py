"""Mixed-type tables: a likelihood p(x|z) that factorises over columns of different types, with
missing entries left out of it, and the encoding that feeds such rows to an MLP encoder.

A row is a float vector ``[D]`` with one entry per column: the value of a numeric or count
column, 0/1 for a binary column, the category's code 0..K-1 for a categorical column, NaN for
a missing entry. Column ``j`` has a type (``columns[j]``, written ``numeric``, ``binary``,
``count`` or ``categorical:K``):

=================  ================================================  =====================
type               p(x_j | z)                                        decoder outputs
=================  ================================================  =====================
numeric            N(m_j + s_j mu_j(z), (s_j sigma_j)^2), sigma_j    1 (mu_j)
                   learned per column; m_j, s_j the column's mean
                   and standard deviation (the data is standardized
                   inside the model)
binary             Bernoulli(sigmoid(l_j(z)))                        1 (logit)
count              Poisson(exp(log m_j + eta_j(z)))                  1 (log-rate offset)
categorical:K      Categorical(softmax(l_j(z)))                      K (logits)
=================  ================================================  =====================

log p(x|z) = sum over the *observed* entries j of log p(x_j|z): a missing entry contributes
nothing, so the ELBO and the importance-sampled log-likelihood are those of the observed
sub-vector x_obs (Nazabal et al. 2020, HI-VAE; Mattei & Frellsen 2019, MIWAE). The encoder sees
standardized numeric values, one-hot categories and one missing-indicator per column, with
missing entries set to 0 (:mod:`vaekit.table_encoding`; the column types and their layout are
:mod:`vaekit.table_columns`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from .errors import ConfigError, DataError
from .posteriors import posterior_mean
from .table_columns import (COLUMN_TYPES, Column, _ColumnScaling,  # noqa: F401 (re-exported)
                            _Layout, _observed, parse_columns)
from .table_encoding import (EncodingAndCondition, TableEncoding,  # noqa: F401 (re-exported)
                             table_mlp_networks)

LOG_RATE_MAX = 40.0  # exp(40) ~ 2e17: a Poisson rate beyond any count, and no overflow


class TableDistribution(Distribution):
    """p(x|z) of a table row: independent columns of the types in the module docstring; batch
    ``params.shape[:-1]``, event ``[D]``. ``log_prob`` sums the observed entries only."""

    arg_constraints: dict = {}
    support = constraints.real  # per column: reals, {0, 1}, counts or codes (check_support)
    has_rsample = False

    def __init__(self, params: torch.Tensor, layout: _Layout, loc: torch.Tensor,
                 scale: torch.Tensor, sigma: torch.Tensor) -> None:
        self.params, self.layout = params, layout  # [..., P]
        self.loc, self.scale, self.sigma = loc, scale, sigma  # [D], [D], [num numeric]
        super().__init__(params.shape[:-1], torch.Size([len(layout.columns)]), validate_args=False)

    def _part(self, kind: str) -> tuple[slice | torch.Tensor, torch.Tensor]:
        cols, offsets, _ = self.layout.by_kind[kind]
        device = self.params.device
        if isinstance(cols, torch.Tensor):
            cols, offsets = cols.to(device), offsets.to(device)
        return cols, self.params[..., offsets]

    def _has(self, kind: str) -> bool:
        return self.layout.by_kind[kind][2] > 0

    def _numeric(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cols, mu = self._part("numeric")
        return cols, self.loc[cols] + self.scale[cols] * mu, self.scale[cols] * self.sigma

    def _log_rate(self) -> tuple[torch.Tensor, torch.Tensor]:
        cols, eta = self._part("count")
        offset = torch.log(self.loc[cols].clamp_min(1e-3))  # log of the column's mean count
        return cols, (offset + eta).clamp(max=LOG_RATE_MAX)

    def categorical_log_probs(self) -> list[tuple[int, torch.Tensor]]:
        """``(column, log-probabilities [..., K])`` of each categorical column (log-softmax of
        the logits: each row sums to 1 in probability)."""
        return [(j, F.log_softmax(self.params[..., o : o + k], -1))
                for j, o, k in self.layout.categorical]

    def log_prob_columns(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x_j|z) of every entry ``[..., D]`` (batch broadcast with ``value``), 0 for
        a missing entry."""
        observed, x = _observed(value)
        shape = torch.broadcast_shapes(self.batch_shape + self.event_shape, x.shape)
        out = torch.zeros(shape, dtype=self.params.dtype, device=self.params.device)
        if self._has("numeric"):
            cols, loc, scale = self._numeric()
            xj = x[..., cols]
            out[..., cols] = (-0.5 * ((xj - loc) / scale) ** 2 - torch.log(scale)
                              - 0.5 * math.log(2 * math.pi))
        if self._has("binary"):
            cols, logits = self._part("binary")
            out[..., cols] = x[..., cols] * logits - F.softplus(logits)  # -BCE with logits
        if self._has("count"):
            cols, log_rate = self._log_rate()
            xj = x[..., cols]
            out[..., cols] = xj * log_rate - torch.exp(log_rate) - torch.lgamma(xj + 1)
        for j, log_p in self.categorical_log_probs():
            code = x[..., j].long().clamp(0, log_p.shape[-1] - 1)
            log_p = log_p.expand(shape[:-1] + log_p.shape[-1:])
            out[..., j] = log_p.gather(-1, code.expand(shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return torch.where(observed, out, torch.zeros_like(out))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x_obs|z) = sum_{j observed} log p(x_j|z): ``[...]``."""
        return self.log_prob_columns(value).sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """E[x_j|z] for numeric, count and binary columns (the probability of 1) and, for a
        categorical column, the code of its most probable category (a mean of codes has no
        meaning): ``[..., D]``."""
        out = torch.zeros(self.batch_shape + self.event_shape, dtype=self.params.dtype,
                          device=self.params.device)
        cols, loc, _ = self._numeric()
        out[..., cols] = loc
        cols, logits = self._part("binary")
        out[..., cols] = torch.sigmoid(logits)
        cols, log_rate = self._log_rate()
        out[..., cols] = torch.exp(log_rate)
        for j, log_p in self.categorical_log_probs():
            out[..., j] = log_p.argmax(-1).to(out.dtype)
        return out

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """x ~ p(x|z), every column drawn: ``[*sample_shape, ..., D]``."""
        shape = torch.Size(sample_shape) + self.batch_shape
        out = torch.zeros(shape + self.event_shape, dtype=self.params.dtype,
                          device=self.params.device)
        cols, loc, scale = self._numeric()
        out[..., cols] = torch.normal(loc.expand(shape + loc.shape[-1:]),
                                      scale.expand(shape + loc.shape[-1:]))
        cols, logits = self._part("binary")
        out[..., cols] = torch.bernoulli(torch.sigmoid(logits).expand(shape + logits.shape[-1:]))
        cols, log_rate = self._log_rate()
        out[..., cols] = torch.poisson(torch.exp(log_rate).expand(shape + log_rate.shape[-1:]))
        for j, log_p in self.categorical_log_probs():
            probs = log_p.exp().expand(shape + log_p.shape[-1:])
            out[..., j] = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(
                shape).to(out.dtype)
        return out

    def point_estimate(self, weights: torch.Tensor) -> torch.Tensor:
        """The value a weighted mixture sum_k w_k p(x|z_k) predicts for each entry, with batch
        ``[K, B]`` and weights ``w [K, B]`` summing to 1 over k: its mean for numeric and count
        columns, its most probable value for binary and categorical ones: ``[B, D]``."""
        w = weights.unsqueeze(-1)  # [K, B, 1]
        mean = (w * self.mean).sum(0)  # binary: P(x_j = 1) under the mixture
        cols, _ = self._part("binary")
        mean[..., cols] = (mean[..., cols] > 0.5).to(mean.dtype)
        for j, log_p in self.categorical_log_probs():
            mean[..., j] = (w * log_p.exp()).sum(0).argmax(-1).to(mean.dtype)
        return mean

    def squared_error(self, value: torch.Tensor) -> torch.Tensor:
        """sum over observed entries of the squared error of the predicted mean, numeric and
        count columns in units of the column's standard deviation, binary and categorical ones
        as the Brier score sum_k (1[x = k] - p_k)^2: ``[...]``, the reconstruction error."""
        observed, x = _observed(value)
        shape = torch.broadcast_shapes(self.batch_shape + self.event_shape, x.shape)
        out = torch.zeros(shape, dtype=self.params.dtype, device=self.params.device)
        mean = self.mean
        for kind in ("numeric", "count"):
            cols, _ = self._part(kind)
            out[..., cols] = ((x[..., cols] - mean[..., cols]) / self.scale[cols]) ** 2
        cols, _ = self._part("binary")
        out[..., cols] = 2 * (x[..., cols] - mean[..., cols]) ** 2  # both one-hot entries
        for j, log_p in self.categorical_log_probs():
            one_hot = F.one_hot(x[..., j].long().clamp(0, log_p.shape[-1] - 1), log_p.shape[-1])
            out[..., j] = ((one_hot - log_p.exp()) ** 2).sum(-1)
        return torch.where(observed, out, torch.zeros_like(out)).sum(-1)


class TableLikelihood(_ColumnScaling):
    """p(x|z) = prod_{j observed} p(x_j|z) over the columns of a table (see the module
    docstring); the network maps ``z [..., L]`` to the columns' parameters ``[..., P]``.
    Numeric scales sigma_j = min_scale + softplus(raw_j) are learned per column, in units of
    the column's standard deviation."""

    def __init__(self, net: nn.Module, data_shape: Sequence[int], columns: Sequence[Column],
                 init_scale: float = 1.0, min_scale: float = 1e-3) -> None:
        super().__init__(columns)
        if tuple(data_shape) != (len(self.columns),):
            raise ConfigError(f"a table of {len(self.columns)} column types needs rows of shape "
                              f"({len(self.columns)},), got {tuple(data_shape)}")
        self.net = net
        self.data_shape = tuple(data_shape)
        self.layout = _Layout(columns)
        self.min_scale = min_scale
        num_numeric = self.layout.by_kind["numeric"][2]
        raw = math.log(math.expm1(max(init_scale - min_scale, 1e-6)))
        self.raw_scale = nn.Parameter(torch.full((num_numeric,), raw))

    @classmethod
    def from_config(cls, net: nn.Module, data_shape: Sequence[int], cfg) -> TableLikelihood:
        return cls(net, data_shape, parse_columns(cfg.columns), cfg.gaussian_init_scale,
                   cfg.gaussian_min_scale)

    def forward(self, z: torch.Tensor) -> TableDistribution:
        sigma = self.min_scale + F.softplus(self.raw_scale)
        return TableDistribution(self.net(z), self.layout, self.loc, self.scale, sigma)

    def check_support(self, x: torch.Tensor) -> None:
        """Refuses rows that no column type can hold (NaN, a missing entry, is allowed)."""
        if x.dim() < 2 or tuple(x.shape[1:]) != self.data_shape:
            raise DataError(f"the table has rows of shape {tuple(x.shape[1:])} but the model's "
                            f"columns need {self.data_shape}")
        observed, filled = _observed(x)
        if bool(torch.isinf(filled).any()):
            raise DataError("the table contains infinite values; clean them first (a missing "
                            "entry is NaN)")
        # the largest valid value of each column (numeric: any)
        top = torch.tensor([{"binary": 1.0, "count": math.inf, "numeric": math.inf}.get(
            c.kind, c.num_categories - 1) for c in self.columns], device=x.device)
        discrete = torch.tensor([c.kind != "numeric" for c in self.columns], device=x.device)
        bad = observed & discrete & ((filled < 0) | (filled > top) | (filled != filled.round()))
        if bool(bad.any()):
            j = int(bad.any(0).nonzero()[0])
            c = self.columns[j]
            need = {"binary": "0 or 1", "count": "a count 0, 1, 2, ..."}.get(
                c.kind, f"a category code 0..{c.num_categories - 1}")
            raise DataError(f"column {j + 1} ({c}) holds a value that is not {need}")


@torch.no_grad()
def column_reconstruction(model, x: torch.Tensor, batch_size: int = 1000,
                          y: torch.Tensor | None = None) -> list[dict]:
    """How well each column is reconstructed, over the observed entries of ``x [N, D]``: the
    decoder at the posterior mean, p(x | z = E_q[z|x]), scored by its mean log p(x_j|z) (nats)
    and by an error: RMSE / the column's standard deviation for numeric and count columns (1 is
    no better than predicting the mean), the error rate of the most probable value for binary
    and categorical ones. One dict per column: kind, observed, log_prob, metric, error. A
    conditional model is given the condition ``y`` of each row (labels or covariates)."""
    device = next(model.parameters()).device
    columns = model.decoder.columns
    log_prob = torch.zeros(len(columns), dtype=torch.float64)
    error = torch.zeros(len(columns), dtype=torch.float64)
    observed = torch.zeros(len(columns), dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        bound = model if y is None else model.given(y[start : start + batch_size])
        p_x = bound.decoder(posterior_mean(bound.encoder(xb)))
        mask = ~torch.isnan(xb)
        log_prob += p_x.log_prob_columns(xb).double().sum(0).cpu()
        mean = p_x.mean
        for j, c in enumerate(columns):
            m = mask[:, j]
            if c.kind in ("numeric", "count"):
                e = (xb[m, j] - mean[m, j]) ** 2
            elif c.kind == "binary":
                e = ((mean[m, j] > 0.5).to(xb.dtype) != xb[m, j]).to(xb.dtype)
            else:
                e = (mean[m, j] != xb[m, j]).to(xb.dtype)
            error[j] += e.double().sum().cpu()
        observed += mask.double().sum(0).cpu()
    n = observed.clamp_min(1)
    out = []
    for j, c in enumerate(columns):
        scalar = c.kind in ("numeric", "count")
        value = float((error[j] / n[j]).sqrt() / model.decoder.scale[j].double().cpu()) \
            if scalar else float(error[j] / n[j])
        out.append({"kind": str(c), "observed": int(observed[j]),
                    "log_prob": float(log_prob[j] / n[j]),
                    "metric": "RMSE / std" if scalar else "error rate", "error": value})
    return out


def model_errors(model) -> str | None:
    """A table's rules on the model options (collected by config validation)."""
    if model.columns is None and model.likelihood == "table":
        return "likelihood 'table' needs the column types (model.columns, --column-types)"
    if model.columns is None:
        return None
    if model.likelihood not in ("auto", "table"):
        return (f"a table with column types is modelled by likelihood 'table', not "
                f"'{model.likelihood}'")
    if model.arch != "mlp":
        return f"tables use --arch mlp, not '{model.arch}'"
    if model.standardize:
        return ("a table standardizes its numeric columns inside the model; drop standardize "
                "(--standardize)")
    if model.prior == "vamp":
        return ("prior 'vamp' learns pseudo-inputs in data space, which a table's categories "
                "are not; use another prior")
    return None
