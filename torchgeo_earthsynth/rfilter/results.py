# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""R-Filter's results: a batch's decision, the per-rule table, and selecting the kept samples."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor


def select(batch: Mapping[str, Any], keep: Tensor) -> dict[str, Any]:
    """The samples of a collated batch where ``keep`` is True.

    Tensors whose first dimension is the batch size are indexed, lists/tuples of that length
    are filtered, everything else is kept as is.

    Args:
        batch: a default-collated batch dict.
        keep: bool [B].

    Returns:
        A new batch dict with ``keep.sum()`` samples.
    """
    b = keep.numel()
    flags = keep.cpu().tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == b:
            out[key] = value[keep.to(value.device)]
        elif isinstance(value, list | tuple) and len(value) == b:
            out[key] = type(value)(v for v, k in zip(value, flags, strict=True) if k)
        else:
            out[key] = value
    return out


@dataclass
class RFilterResult:
    """What :class:`RFilter` decided for one batch.

    Attributes:
        keep: bool [B], True for the samples every enabled rule passed.
        scores: rule -> float32 [B] (CPU). ``alignment`` CLIP score, ``layout`` mIoU (NaN when
            the mask has nothing to score), ``sanity`` 1/0 plus ``sanity_finite``,
            ``sanity_std`` and ``sanity_saturation``, ``novelty`` the highest cosine similarity
            to the reference or a kept sample (-1 with nothing to compare), ``informativeness``
            the model's confidence. Only enabled rules have scores.
        reasons: per sample, ``''`` when kept, else ``'; '``-joined failures.
        counts: running ``{rule: {'seen', 'kept', 'dropped'}}`` after this batch, plus
            ``'total'``.
    """

    keep: Tensor
    scores: dict[str, Tensor]
    reasons: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def num_kept(self) -> int:
        """How many samples were kept."""
        return int(self.keep.sum())


@dataclass
class RFilterSummary:
    """Seen/kept/dropped per rule, as rows of dicts; ``str()`` gives a Markdown table."""

    rows: list[dict[str, Any]]

    #: Column order of the table.
    columns: tuple[str, ...] = ('rule', 'enabled', 'criterion', 'seen', 'kept', 'dropped', 'note')

    def to_csv(self, path: str | Path | None = None) -> str:
        """The table as CSV text, also written to ``path`` when given.

        Args:
            path: file to write, optional.

        Returns:
            The CSV text.
        """
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.columns), lineterminator='\n')
        writer.writeheader()
        writer.writerows(self.rows)
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_markdown(self) -> str:
        """The table in GitHub Markdown."""
        lines = ['| ' + ' | '.join(self.columns) + ' |', '|' + '---|' * len(self.columns)]
        for row in self.rows:
            lines.append('| ' + ' | '.join(str(row[c]) for c in self.columns) + ' |')
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


__all__ = (
    'RFilterResult',
    'RFilterSummary',
    'select',
)
