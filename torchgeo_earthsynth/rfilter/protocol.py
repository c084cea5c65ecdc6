# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The sample-filter protocol that the bank writer and SyntheticAugmentation both call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ('BatchFilter', 'KeyedFilter', 'SampleFilter', 'filter_verdict')


@runtime_checkable
class SampleFilter(Protocol):
    """A filter of generated samples, as :class:`~torchgeo_earthsynth.rfilter.RFilter` is.

    Called with a batch dict (``image`` float [N, 3, H, W] in 0..255, ``mask`` int64
    [N, H, W] vocabulary ids, ``prompt`` N strings, and, where known, ``reference``: the real
    images the samples stand for), it returns a bool tensor [N] (True = keep) or an object
    with such a ``keep`` and optionally ``reasons`` (one string per sample, ``''`` when kept,
    failures joined by ``'; '``, each starting with its rule name). Wrap a filter with another
    signature in :class:`KeyedFilter`.

    .. versionadded:: 0.1
    """

    def __call__(self, batch: dict[str, Any], /) -> Any:
        """The verdict on ``batch``."""
        ...


#: The name :mod:`torchgeo_earthsynth.bank.store` gave :class:`SampleFilter`.
BatchFilter = SampleFilter


class KeyedFilter:
    """Call a filter with batch fields as positional arguments (``filter(images, masks, ...)``).

    Makes a filter with another signature fit :class:`SampleFilter`.

    .. versionadded:: 0.1
    """

    def __init__(
        self, filter: Callable[..., Any], keys: Sequence[str] = ('image', 'mask', 'prompt')
    ) -> None:
        """Initialize a new KeyedFilter instance.

        Args:
            filter: the filter.
            keys: batch keys passed, in order.
        """
        self.filter = filter
        self.keys = tuple(keys)

    def __call__(self, batch: dict[str, Any], /) -> Any:
        """The filter's verdict on ``batch``."""
        return self.filter(*(batch[k] for k in self.keys))


def filter_verdict(result: Any, size: int) -> tuple[Tensor, list[str]]:
    """Read what a :class:`SampleFilter` returned for ``size`` samples.

    Args:
        result: a bool tensor [size] or an object with ``keep`` (and optionally ``reasons``).
        size: the number of samples filtered.

    Returns:
        ``keep`` bool [size] on the CPU and one reason per sample (``''`` when none given).

    Raises:
        ValueError: if ``keep`` is not one value per sample.
    """
    keep = torch.as_tensor(getattr(result, 'keep', result)).detach().cpu()
    if keep.shape != (size,):
        raise ValueError(
            f'the filter returned keep of shape {tuple(keep.shape)}; expected a '
            f'bool tensor [{size}] (one per sample)'
        )
    reasons = getattr(result, 'reasons', None)
    reasons = [str(r) for r in reasons] if isinstance(reasons, Sequence) else [''] * size
    return keep.bool(), reasons
