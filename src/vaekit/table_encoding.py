"""A table row as the encoder network reads it, and the MLP networks of a table model: the
row's encoding (standardized numeric and count values, 0/1, one-hot categories, one missing
indicator per column; :class:`TableEncoding`), the same followed by a conditional model's
condition (:class:`EncodingAndCondition`), and :func:`table_mlp_networks`, the encoder and
decoder of a table (the decoder outputs the parameters of :class:`vaekit.tables.TableLikelihood`).
The row format is described in :mod:`vaekit.tables`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .nets import MLP
from .table_columns import Column, _ColumnScaling, _index, _Layout, _observed, parse_columns


class TableEncoding(_ColumnScaling):
    """x ``[..., D]`` -> the encoder network's input ``[..., E]``: standardized numeric and
    count values, binary values, one-hot categories (missing entries 0), then one missing
    indicator per column."""

    def __init__(self, columns: Sequence[Column]) -> None:
        super().__init__(columns)
        self.layout = _Layout(columns)
        self.encoding_dim = sum(c.encoding_dim for c in self.columns) + len(self.columns)
        self.scalar_columns = _index([j for j, c in enumerate(self.columns)
                                      if c.kind != "categorical"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        observed, filled = _observed(x)
        values = torch.where(observed, (filled - self.loc) / self.scale, torch.zeros_like(x))
        scalar = self.scalar_columns
        parts = [values[..., scalar.to(x.device) if isinstance(scalar, torch.Tensor) else scalar]]
        for j, _, k in self.layout.categorical:
            code = filled[..., j].long().clamp(0, k - 1)
            parts.append(F.one_hot(code, k).to(x.dtype) * observed[..., j : j + 1])
        parts.append((~observed).to(x.dtype))
        return torch.cat(parts, -1)


class EncodingAndCondition(nn.Module):
    """[x, y] ``[..., D + C]`` -> [encoding(x), y]: what the encoder MLP of a conditional model
    reads for a table, the row's :class:`TableEncoding` followed by the C condition values."""

    def __init__(self, encoding: TableEncoding) -> None:
        super().__init__()
        self.encoding = encoding

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        num_columns = len(self.encoding.columns)
        return torch.cat([self.encoding(xy[..., :num_columns]), xy[..., num_columns:]], -1)


def table_mlp_networks(cfg, data_shape: tuple[int, ...], enc_out: int, decoder_in: int):
    """The MLP family for a table: encoder ``TableEncoding -> MLP -> enc_out``, decoder
    ``MLP: [z, y] (decoder_in numbers) -> the columns' parameters`` (``cfg.hidden``
    mirrored). ``data_shape`` is (D,), or
    (D + C,) for the encoder of a conditional model, which reads [x, y]
    (:class:`EncodingAndCondition`)."""
    columns = parse_columns(cfg.columns)
    encoding = TableEncoding(columns)
    condition_dim = data_shape[0] - len(columns)
    hidden = list(cfg.hidden)
    enc = nn.Sequential(EncodingAndCondition(encoding) if condition_dim else encoding,
                        MLP((encoding.encoding_dim + condition_dim,), (enc_out,), hidden,
                            cfg.activation, gated=cfg.gated))
    dec = MLP((decoder_in,), (_Layout(columns).num_params,), hidden[::-1], cfg.activation,
              gated=cfg.gated)
    return enc, dec
