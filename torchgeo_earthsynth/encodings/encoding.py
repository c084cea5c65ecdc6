# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DatasetEncoding: how a dataset's label values map to vocabulary ids, and band selection."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import torch
from torch import Tensor

from torchgeo_earthsynth.encodings.bands import Units
from torchgeo_earthsynth.vocabulary import BACKGROUND, CLASS_IDS, NUM_CLASSES

Task = Literal['segmentation', 'classification', 'detection']

#: Bands of an 8-bit true-colour image.
RGB: Final[tuple[str, ...]] = ('R', 'G', 'B')


def normalise_name(name: str) -> str:
    """A class name compared without case, spaces or punctuation.

    Args:
        name: a class name such as ``'Sea & Lake'``.

    Returns:
        The lower-case letters and digits only (``'sealake'``).
    """
    return re.sub(r'[^a-z0-9]', '', name.lower())


def vocabulary_id(value: int | str, where: str) -> int:
    """A vocabulary id given as an id or a class name, checked.

    Args:
        value: a vocabulary id or a :data:`~torchgeo_earthsynth.vocabulary.VOCABULARY` name.
        where: what the value is, for the error (e.g. ``"overrides['shrubs']"``).

    Returns:
        The vocabulary id.

    Raises:
        ValueError: if the name is not in the vocabulary or the id is out of range.
    """
    if isinstance(value, str):
        if value not in CLASS_IDS:
            raise ValueError(f'{where} = {value!r} is not a vocabulary class name')
        return CLASS_IDS[value]
    if not 0 <= int(value) < NUM_CLASSES:
        raise ValueError(f'{where} = {value!r} is outside the vocabulary [0, {NUM_CLASSES - 1}]')
    return int(value)


@dataclass(frozen=True)
class DatasetEncoding:
    """How one dataset encodes its samples, and how that meets our vocabulary.

    Attributes:
        name: the dataset (TorchGeo's class name where it has one, e.g. ``'LoveDA'``).
        task: ``segmentation`` (``mask`` values), ``classification`` (``label``) or
            ``detection`` (box ``label``).
        classes: the class names, in the dataset's own order (``LoveDA.classes``).
        values: the value in the mask (or label) of each class: not its position.
        vocabulary: our vocabulary id of each class; background (0) for a class the
            vocabulary has no counterpart for (never synthesised).
        ignore: no-data values: background in conditions, never written into labels.
        bands: the image's bands as the dataset loads them by default.
        rgb: indices of red, green and blue in ``bands``; None when there is no true-colour
            RGB (e.g. Vaihingen's false-colour IR-R-G).
        dtype: the image tensor's dtype as the dataset returns it.
        pixel_max: the top of the image's pixel range (the range is ``0..pixel_max``).
        gain: synthetic 0..255 RGB times ``gain`` is in the dataset's scale; None when no
            conversion is known (give one with ``image_scale=``).
        band_option: the dataset argument that selects bands (EuroSAT's ``bands``), if any.
        rgb_path: how to load only the RGB bands, for error messages.
        notes: what else a user should know about the encoding.
        units: the physical units its pixels measure: ``'dn8'`` (8-bit digital numbers,
            e.g. aerial orthophotos) or ``'reflectance'`` (0..1, e.g. Sentinel-2).
        pixels_per_unit: pixel value = physical value x this (EuroSAT: reflectance x
            10000; 8-bit datasets: 1). Used for generators that declare their bands
            (:class:`~torchgeo_earthsynth.encodings.bands.SpectralBands`).

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``units`` and ``pixels_per_unit``.
    """

    name: str
    task: Task
    classes: tuple[str, ...]
    values: tuple[int, ...]
    vocabulary: tuple[int, ...]
    ignore: tuple[int, ...] = ()
    bands: tuple[str, ...] = RGB
    rgb: tuple[int, int, int] | None = (0, 1, 2)
    dtype: torch.dtype = torch.float32
    pixel_max: float = 255.0
    gain: float | None = 1.0
    band_option: str | None = None
    rgb_path: str = ''
    notes: str = ''
    units: Units = 'dn8'
    pixels_per_unit: float = 1.0
    _by_name: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check the table is consistent and index the class names.

        Raises:
            ValueError: if lengths differ, a value repeats or is negative, an id is
                outside the vocabulary, or ``pixels_per_unit`` is not positive.
        """
        n = len(self.classes)
        if len(self.values) != n or len(self.vocabulary) != n:
            raise ValueError(
                f'{self.name}: {n} classes but {len(self.values)} values and '
                f'{len(self.vocabulary)} vocabulary ids'
            )
        if len(set(self.values)) != n or min(self.values, default=0) < 0:
            raise ValueError(f'{self.name}: values must be distinct and >= 0, got {self.values}')
        for name, vocab in zip(self.classes, self.vocabulary):
            vocabulary_id(vocab, f'{self.name} class {name!r}')
        if not self.pixels_per_unit > 0:
            raise ValueError(
                f'{self.name}: pixels_per_unit must be > 0, got {self.pixels_per_unit}'
            )
        self._by_name.update((normalise_name(c), i) for i, c in enumerate(self.classes))

    @property
    def size(self) -> int:
        """Length of :meth:`lut`: the largest value plus one."""
        return max(self.values, default=-1) + 1

    def value_of(self, name: str) -> int:
        """The mask (or label) value of a class.

        Args:
            name: a class name (case and punctuation ignored).

        Returns:
            Its value.

        Raises:
            KeyError: if the dataset has no such class.
        """
        return self.values[self._by_name[normalise_name(name)]]

    def unknown_classes(self, classes: Sequence[str]) -> list[str]:
        """The names among ``classes`` that this dataset does not have.

        Args:
            classes: class names.

        Returns:
            Those not in :attr:`classes` (case and punctuation ignored).
        """
        return [c for c in classes if normalise_name(c) not in self._by_name]

    def lut(self) -> Tensor:
        """Value -> vocabulary id: int64 [:attr:`size`]; no-data and gaps map to background.

        Returns:
            The lookup table, indexed by mask (or label) value.
        """
        lut = torch.full((self.size,), BACKGROUND, dtype=torch.long)
        for value, vocab in zip(self.values, self.vocabulary):
            if value not in self.ignore:
                lut[value] = vocab
        return lut

    def inverse(self, unmapped: int | None = None) -> Tensor:
        """Vocabulary id -> value: int64 [67], for labelling synthetic samples.

        No-data values are never chosen; where two classes share an id, the first wins.

        Args:
            unmapped: value of vocabulary ids no class maps to; None marks them -1.

        Returns:
            The inverse table.
        """
        fill = -1 if unmapped is None else unmapped
        inverse = torch.full((NUM_CLASSES,), fill, dtype=torch.long)
        for value, vocab in reversed(list(zip(self.values, self.vocabulary))):
            if value not in self.ignore:
                inverse[vocab] = value
        return inverse

    def with_overrides(self, overrides: Mapping[str, int | str]) -> DatasetEncoding:
        """A copy with some classes mapped to other vocabulary ids.

        Args:
            overrides: ``{class name: vocabulary id or name}``.

        Returns:
            The new encoding (this one when ``overrides`` is empty).

        Raises:
            ValueError: naming every override that is not a class of this dataset, or
                whose target is not in the vocabulary.
        """
        if not overrides:
            return self
        unknown = self.unknown_classes(list(overrides))
        if unknown:
            raise ValueError(
                f'overrides name {unknown}, which are not classes of {self.name}: '
                f'{list(self.classes)}'
            )
        vocabulary = list(self.vocabulary)
        for name, value in overrides.items():
            vocabulary[self._by_name[normalise_name(name)]] = vocabulary_id(
                value, f'overrides[{name!r}]'
            )
        return dataclasses.replace(self, vocabulary=tuple(vocabulary))

    def describe_image(self) -> str:
        """The image's encoding in words, for error messages.

        Returns:
            E.g. ``"3 bands ('R', 'G', 'B'), float32 in 0..255"``.
        """
        dtype = str(self.dtype).removeprefix('torch.')
        return f'{len(self.bands)} bands {self.bands}, {dtype} in 0..{self.pixel_max:g}'


class SelectBands:
    """A sample transform keeping some image bands (the RGB path where there is no option).

    E.g. ``PotsdamDataModule(..., transforms=SelectBands((0, 1, 2)))`` loads R, G, B only.

    .. versionadded:: 0.1
    """

    def __init__(self, indices: Sequence[int]) -> None:
        """Initialize a new SelectBands instance.

        Args:
            indices: the band indices to keep, in order (e.g. an encoding's ``rgb``).
        """
        self.indices = tuple(int(i) for i in indices)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Keep the selected bands of ``sample['image']`` [C, H, W].

        Args:
            sample: a sample dict.

        Returns:
            The sample with its image reduced to the selected bands.
        """
        out = dict(sample)
        out['image'] = sample['image'][list(self.indices)]
        return out

    def __repr__(self) -> str:
        """The selection."""
        return f'{type(self).__name__}({self.indices})'


__all__ = ('RGB', 'DatasetEncoding', 'SelectBands', 'Task', 'normalise_name', 'vocabulary_id')
