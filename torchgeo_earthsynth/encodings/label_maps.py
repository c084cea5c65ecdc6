# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Label maps by class name: a dataset's classes -> vocabulary ids, from the registry."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import torch
from torch import Tensor

from torchgeo_earthsynth.encodings.encoding import normalise_name
from torchgeo_earthsynth.encodings.registry import explicit_encoding
from torchgeo_earthsynth.encodings.table import ENCODINGS


class _RegistryNames(Mapping[str, Mapping[str, int]]):
    """Per registered dataset, its class names (normalised) -> vocabulary ids.

    Read from the dataset registry on use, so it stays the one source of the maps.
    """

    @staticmethod
    def _tables() -> dict[str, dict[str, int]]:
        return {
            dataset: dict(zip(map(normalise_name, e.classes), e.vocabulary))
            for dataset, e in ENCODINGS.items()
        }

    def __getitem__(self, dataset: str) -> Mapping[str, int]:
        return self._tables()[dataset]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables())

    def __len__(self) -> int:
        return len(self._tables())


#: Class name (normalised) -> vocabulary id, per registered dataset
#: (:data:`~torchgeo_earthsynth.encodings.ENCODINGS`).
LABEL_MAPS: Final[Mapping[str, Mapping[str, int]]] = _RegistryNames()


def label_map(
    classes: Sequence[str],
    dataset: str | None = None,
    overrides: Mapping[str, int | str] | None = None,
) -> Tensor:
    """A lookup table from class positions to vocabulary ids, matching classes by name.

    Case and punctuation are ignored. ``overrides`` win over the class names of ``dataset``
    (a dataset of :data:`~torchgeo_earthsynth.encodings.ENCODINGS`, the one source
    of these names), which win over vocabulary names. The table is indexed by position in
    ``classes``; where a dataset's mask values are not positions (TorchGeo's ``LoveDA``),
    use its encoding's
    :meth:`~torchgeo_earthsynth.encodings.DatasetEncoding.lut` instead.

    Args:
        classes: the downstream classes in index order.
        dataset: a registered dataset whose class names to use (e.g. ``'LoveDA'``).
        overrides: extra ``{class name: vocabulary id or name}`` entries, which win.

    Returns:
        int64 tensor ``lut`` with ``lut[index in classes] = vocabulary_id``.

    Raises:
        ValueError: naming every class without a vocabulary mapping (and the way to add
            them), if ``dataset`` is unknown, or if an override is not in the vocabulary.
    """
    if dataset is not None and dataset not in ENCODINGS:
        raise ValueError(f'no label map for dataset {dataset!r}; known: {sorted(ENCODINGS)}')
    encoding = explicit_encoding(classes, names=dataset, overrides=overrides)
    return torch.tensor(encoding.vocabulary, dtype=torch.long)


__all__ = ('LABEL_MAPS', 'label_map')
