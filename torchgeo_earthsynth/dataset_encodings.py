# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""What TorchGeo datasets' samples hold: class values, no-data, vocabulary ids, pixels, bands."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import torch
from torch import Tensor

from torchgeo_earthsynth.compat import TORCHGEO_VERSION_TUPLE
from torchgeo_earthsynth.vocabulary import BACKGROUND, CLASS_IDS, NUM_CLASSES, VOCABULARY

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

    .. versionadded:: 0.1
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
    _by_name: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check the table is consistent and index the class names.

        Raises:
            ValueError: if lengths differ, a value repeats or is negative, or an id is
                outside the vocabulary.
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


def explicit_encoding(
    classes: Sequence[str],
    names: str | None = None,
    overrides: Mapping[str, int | str] | None = None,
    task: Task = 'segmentation',
    name: str = 'explicit',
) -> DatasetEncoding:
    """The encoding of a dataset outside the registry: values are positions in ``classes``.

    Each class maps to the vocabulary by ``overrides``, then ``names``' class-name table
    (a registered dataset's names, e.g. ``'LoveDA'``), then the vocabulary's own names
    (case and punctuation ignored).

    Args:
        classes: the classes in value order (class ``i`` has mask or label value ``i``).
        names: a registered dataset whose class names to reuse, optional.
        overrides: ``{class name: vocabulary id or name}``, which win.
        task: what the labels are.
        name: the dataset's name, for messages.

    Returns:
        The encoding.

    Raises:
        ValueError: naming every class without a vocabulary mapping in one message, or if
            ``names`` is not registered, or an override is not in the vocabulary.

    .. versionadded:: 0.1
    """
    table: dict[str, int] = {normalise_name(n): i for i, n in enumerate(VOCABULARY)}
    if names is not None:
        known = encoding_for(names)
        table.update(zip((normalise_name(c) for c in known.classes), known.vocabulary))
    for key, value in (overrides or {}).items():
        table[normalise_name(key)] = vocabulary_id(value, f'overrides[{key!r}]')
    missing = [c for c in classes if normalise_name(c) not in table]
    if missing:
        where = f" in {names}'s class names" if names is not None else ''
        what = f'class {missing[0]!r} has' if len(missing) == 1 else f'classes {missing} have'
        example = ', '.join(f'{c!r}: <vocabulary id or name>' for c in missing)
        raise ValueError(
            f'{what} no vocabulary mapping{where} and match no vocabulary name; '
            f'pass overrides={{{example}}}'
        )
    vocabulary = tuple(table[normalise_name(c)] for c in classes)
    return DatasetEncoding(name, task, tuple(classes), tuple(range(len(classes))), vocabulary)


def _segmentation(
    name: str, pairs: Sequence[tuple[str, int, int | str]], **kwargs: Any
) -> DatasetEncoding:
    """An encoding from ``(class, value, vocabulary id or name)`` rows."""
    return DatasetEncoding(
        name,
        kwargs.pop('task', 'segmentation'),
        tuple(c for c, _, _ in pairs),
        tuple(v for _, v, _ in pairs),
        tuple(vocabulary_id(t, f'{name} {c!r}') for c, _, t in pairs),
        **kwargs,
    )


def _positional(
    name: str, task: Task, pairs: Sequence[tuple[str, int | str]], **kwargs: Any
) -> DatasetEncoding:
    """An encoding whose values are the positions of ``(class, vocabulary)`` rows."""
    rows = [(c, i, t) for i, (c, t) in enumerate(pairs)]
    return _segmentation(name, rows, task=task, **kwargs)


#: No vocabulary counterpart: the class is kept but never synthesised.
NONE: Final[int] = BACKGROUND

_EUROSAT_BANDS = (
    'B01',
    'B02',
    'B03',
    'B04',
    'B05',
    'B06',
    'B07',
    'B08',
    'B09',
    'B10',
    'B11',
    'B12',
    'B8A',
)

_ISPRS = (
    ('Clutter/background', 'background'),
    ('Impervious surfaces', 'pavement'),
    ('Building', 'building'),
    ('Low Vegetation', 'grass'),
    ('Tree', 'tree'),
    ('Car', 'small vehicle'),
)

#: The datasets supported out of the box, by name (TorchGeo's class name).
ENCODINGS: Final[Mapping[str, DatasetEncoding]] = {
    e.name: e
    for e in (
        # LoveDA returns the raw mask: 0 no-data, 1 background ... 7 agriculture, while
        # LoveDA.classes lists no-data last.
        _segmentation(
            'LoveDA',
            (
                ('background', 1, 'background'),
                ('building', 2, 'building'),
                ('road', 3, 'road'),
                ('water', 4, 'water'),
                ('barren', 5, 'barren land'),
                ('forest', 6, 'forest land'),
                ('agriculture', 7, 'agriculture land'),
                ('no-data', 0, 'background'),
            ),
            ignore=(0,),
        ),
        # rgb_to_mask gives each colour its position; colours outside the map become 0.
        _positional(
            'DeepGlobeLandCover',
            'segmentation',
            (
                ('Urban land', 'urban land'),
                ('Agriculture land', 'agriculture land'),
                ('Rangeland', 'grass'),
                ('Forest land', 'forest land'),
                ('Water', 'water'),
                ('Barren land', 'barren land'),
                ('Unknown', 'background'),
            ),
            ignore=(6,),
            notes='mask colours outside the colour map load as 0 (Urban land)',
        ),
        _positional(
            'Potsdam2D',
            'segmentation',
            _ISPRS,
            bands=('R', 'G', 'B', 'IR'),
            rgb_path=(
                'PotsdamDataModule(..., transforms=SelectBands((0, 1, 2))) '
                '(from torchgeo_earthsynth.dataset_encodings)'
            ),
        ),
        _positional(
            'Vaihingen2D',
            'segmentation',
            _ISPRS,
            bands=('IR', 'R', 'G'),
            rgb=None,
            notes='images are false-colour IR-R-G: there is no blue band',
        ),
        _positional(
            'UCMerced',
            'classification',
            (
                ('agricultural', 'agriculture land'),
                ('airplane', 'plane'),
                ('baseballdiamond', 'baseball diamond'),
                ('beach', NONE),
                ('buildings', 'building'),
                ('chaparral', NONE),
                ('denseresidential', 'urban land'),
                ('forest', 'forest land'),
                ('freeway', 'road'),
                ('golfcourse', 'golf field'),
                ('harbor', 'harbor'),
                ('intersection', 'intersection'),
                ('mediumresidential', NONE),
                ('mobilehomepark', NONE),
                ('overpass', 'overpass'),
                ('parkinglot', NONE),
                ('river', 'water'),
                ('runway', NONE),
                ('sparseresidential', NONE),
                ('storagetanks', 'storage tank'),
                ('tenniscourt', 'tennis court'),
            ),
            notes='labels are positions in the sorted class folders; images resized to 256',
        ),
        # ImageFolder labels: positions of the sorted class folder names.
        _positional(
            'EuroSAT',
            'classification',
            (
                ('AnnualCrop', 'agriculture land'),
                ('Forest', 'forest land'),
                ('HerbaceousVegetation', 'grass'),
                ('Highway', 'road'),
                ('Industrial', NONE),
                ('Pasture', NONE),
                ('PermanentCrop', NONE),
                ('Residential', 'urban land'),
                ('River', NONE),
                ('SeaLake', 'water'),
            ),
            bands=_EUROSAT_BANDS,
            rgb=(3, 2, 1),
            pixel_max=65535.0,
            gain=None,
            band_option='bands',
            rgb_path="EuroSATDataModule(..., bands=('B04', 'B03', 'B02')) (EuroSAT.rgb_bands)",
            notes=(
                'Sentinel-2 L1C reflectance x 10000 (RGB bands mostly below ~3500); '
                'synthetic 0..255 RGB needs image_scale=<gain>, e.g. 10000 / 255 / 2.5 '
                "(Sentinel Hub's true-colour gain 2.5)"
            ),
        ),
        _positional(
            'RESISC45',
            'classification',
            (
                ('airplane', 'plane'),
                ('airport', 'airport'),
                ('baseball_diamond', 'baseball diamond'),
                ('basketball_court', 'basketball court'),
                ('beach', NONE),
                ('bridge', 'bridge'),
                ('chaparral', NONE),
                ('church', NONE),
                ('circular_farmland', NONE),
                ('cloud', NONE),
                ('commercial_area', NONE),
                ('dense_residential', 'urban land'),
                ('desert', 'barren land'),
                ('forest', 'forest land'),
                ('freeway', 'road'),
                ('golf_course', 'golf field'),
                ('ground_track_field', 'ground track field'),
                ('harbor', 'harbor'),
                ('industrial_area', NONE),
                ('intersection', 'intersection'),
                ('island', NONE),
                ('lake', 'water'),
                ('meadow', 'grass'),
                ('medium_residential', NONE),
                ('mobile_home_park', NONE),
                ('mountain', NONE),
                ('overpass', 'overpass'),
                ('palace', NONE),
                ('parking_lot', NONE),
                ('railway', NONE),
                ('railway_station', 'train station'),
                ('rectangular_farmland', 'agriculture land'),
                ('river', NONE),
                ('roundabout', 'roundabout'),
                ('runway', NONE),
                ('sea_ice', NONE),
                ('ship', 'ship'),
                ('snowberg', NONE),
                ('sparse_residential', NONE),
                ('stadium', 'stadium'),
                ('storage_tank', 'storage tank'),
                ('tennis_court', 'tennis court'),
                ('terrace', NONE),
                ('thermal_power_station', NONE),
                ('wetland', NONE),
            ),
        ),
        # COCO category ids: 1..10, 0 is background (VHR10.categories; TorchGeo 0.10
        # renamed 'ships' to 'ship', the ids stayed).
        _positional(
            'VHR10',
            'detection',
            (
                ('background', 'background'),
                ('airplane', 'plane'),
                ('ship' if TORCHGEO_VERSION_TUPLE >= (0, 10) else 'ships', 'ship'),
                ('storage tank', 'storage tank'),
                ('baseball diamond', 'baseball diamond'),
                ('tennis court', 'tennis court'),
                ('basketball court', 'basketball court'),
                ('ground track field', 'ground track field'),
                ('harbor', 'harbor'),
                ('bridge', 'bridge'),
                ('vehicle', 'vehicle'),
            ),
            notes='85 of its images are colour-infrared (Vaihingen); the rest true colour',
        ),
        _positional(
            'DIOR',
            'detection',
            (
                ('airplane', 'plane'),
                ('airport', 'airport'),
                ('baseballfield', 'baseball diamond'),
                ('basketballcourt', 'basketball court'),
                ('bridge', 'bridge'),
                ('chimney', 'chimney'),
                ('dam', 'dam'),
                ('expresswayservicearea', 'expressway service area'),
                ('expresswaytollstation', 'expressway toll station'),
                ('golffield', 'golf field'),
                ('groundtrackfield', 'ground track field'),
                ('harbor', 'harbor'),
                ('overpass', 'overpass'),
                ('ship', 'ship'),
                ('stadium', 'stadium'),
                ('storagetank', 'storage tank'),
                ('tenniscourt', 'tennis court'),
                ('trainstation', 'train station'),
                ('vehicle', 'vehicle'),
                ('windmill', 'windmill'),
            ),
            dtype=torch.uint8,
        ),
        # An EarthSynth-180K source (not a TorchGeo 0.8 dataset): values as released.
        _positional(
            'OpenEarthMap',
            'segmentation',
            (
                ('background', 'background'),
                ('bareland', 'bare land'),
                ('rangeland', 'grass'),
                ('developed space', 'pavement'),
                ('road', 'road'),
                ('tree', 'tree'),
                ('water', 'water'),
                ('agriculture land', 'agriculture land'),
                ('building', 'building'),
            ),
        ),
    )
}


def encoding_for(dataset: str | type | DatasetEncoding) -> DatasetEncoding:
    """The registered encoding of a dataset.

    Args:
        dataset: its name (``'LoveDA'``), its TorchGeo class, or an encoding (returned).

    Returns:
        The encoding.

    Raises:
        ValueError: if the dataset is not registered (listing those that are, and the
            explicit map to use instead).

    .. versionadded:: 0.1
    """
    if isinstance(dataset, DatasetEncoding):
        return dataset
    name = dataset if isinstance(dataset, str) else dataset.__name__
    if name not in ENCODINGS:
        raise ValueError(
            f'no encoding for dataset {name!r}; registered: {sorted(ENCODINGS)}. For another '
            'dataset give an explicit map: classes=<names in mask-value order> with '
            'overrides={name: vocabulary id or name}, or dataset=DatasetEncoding(...)'
        )
    return ENCODINGS[name]


def resolve_encoding(
    classes: Sequence[str] | None,
    dataset: str | type | DatasetEncoding | None = None,
    names: str | None = None,
    overrides: Mapping[str, int | str] | None = None,
    task: Task = 'segmentation',
) -> DatasetEncoding:
    """The encoding a user means: a registered dataset's, or an explicit map of ``classes``.

    Args:
        classes: the classes; with ``dataset`` they must be the dataset's own (any order);
            without, they are in value order (class ``i`` has value ``i``).
        dataset: a registered dataset (mask values from the registry, not positions).
        names: for a dataset outside the registry, a registered dataset whose class names
            to reuse (positions stay the values).
        overrides: ``{class name: vocabulary id or name}``, which win.
        task: the task the labels serve.

    Returns:
        The encoding.

    Raises:
        ValueError: if both or neither of ``classes`` and ``dataset`` say what the classes
            are, ``classes`` are not the dataset's, the dataset serves another task, or
            classes have no vocabulary mapping (all named in one message).

    .. versionadded:: 0.1
    """
    if dataset is None:
        if classes is None:
            raise ValueError('give classes=<names in mask-value order> or dataset=<registered>')
        return explicit_encoding(classes, names, overrides, task)
    if names is not None:
        raise ValueError(f'give dataset={dataset!r} or names={names!r}, not both')
    encoding = encoding_for(dataset).with_overrides(overrides or {})
    if encoding.task != task:
        raise ValueError(f'{encoding.name} is a {encoding.task} dataset, not {task}')
    if classes is not None:
        given = {normalise_name(c) for c in classes}
        unknown = encoding.unknown_classes(classes)
        missing = [c for c in encoding.classes if normalise_name(c) not in given]
        if unknown or missing:
            raise ValueError(
                f'classes {list(classes)} are not those of {encoding.name} '
                f'{list(encoding.classes)} (unknown: {unknown}, missing: {missing}); for a '
                f'dataset whose mask values are positions in classes, pass '
                f'names={encoding.name!r} instead of dataset='
            )
    return encoding


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


__all__ = (
    'ENCODINGS',
    'NONE',
    'DatasetEncoding',
    'SelectBands',
    'encoding_for',
    'explicit_encoding',
    'normalise_name',
    'resolve_encoding',
    'vocabulary_id',
)
