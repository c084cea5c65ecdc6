# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Dataset encodings: look up a registered dataset's, or resolve the one a user means."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torchgeo_earthsynth.encodings.encoding import RGB as RGB
from torchgeo_earthsynth.encodings.encoding import (
    DatasetEncoding,
    SelectBands,
    normalise_name,
    vocabulary_id,
)
from torchgeo_earthsynth.encodings.encoding import Task as Task
from torchgeo_earthsynth.encodings.table import ENCODINGS, NONE
from torchgeo_earthsynth.vocabulary import VOCABULARY


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
