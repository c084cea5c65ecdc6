# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Pixel scale and bands: synthetic RGB checked against the dataset and its datamodule."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from torchgeo_earthsynth.encodings.registry import ENCODINGS, DatasetEncoding, SelectBands


def synthetic_gain(encoding: DatasetEncoding, image_scale: float | None) -> float:
    """The factor taking synthetic 0..255 RGB into the dataset's pixel scale.

    Args:
        encoding: the dataset's encoding.
        image_scale: a given factor, which wins over the encoding's.

    Returns:
        The factor.

    Raises:
        ValueError: if neither knows one (e.g. reflectance), or ``image_scale`` <= 0.
    """
    if image_scale is not None:
        if image_scale <= 0:
            raise ValueError(f'image_scale must be > 0, got {image_scale}')
        return float(image_scale)
    if encoding.gain is None:
        raise ValueError(
            f'{encoding.name} images are {encoding.describe_image()}, synthetic images 0..255 '
            f'RGB, and no conversion is known: pass image_scale=<factor> (synthetic x factor '
            f'= dataset pixels). {encoding.notes}'
        )
    return encoding.gain


def registered_dataset(datamodule: Any, bound: DatasetEncoding | None) -> str | None:
    """The registered dataset a TorchGeo datamodule loads (its ``dataset_class``), if any.

    Args:
        datamodule: the datamodule.
        bound: the encoding the augmentation is bound to, if any.

    Returns:
        The dataset's name in the registry, or None when it is not registered.

    Raises:
        ValueError: if ``bound`` is another registered dataset.
    """
    name = getattr(getattr(datamodule, 'dataset_class', None), '__name__', None)
    if name not in ENCODINGS:
        return None
    if bound is not None and bound.name in ENCODINGS and bound.name != name:
        raise ValueError(
            f'SyntheticAugmentation is bound to {bound.name} but the datamodule loads {name}'
        )
    return str(name)


def _rgb_selected(encoding: DatasetEncoding, datamodule: Any) -> tuple[str, ...] | None:
    """The bands the datamodule loads when they are not exactly the RGB ones, else None."""
    assert encoding.rgb is not None
    rgb = tuple(encoding.bands[i] for i in encoding.rgb)
    kwargs = getattr(datamodule, 'kwargs', {}) or {}
    if encoding.band_option is not None:
        loaded = tuple(kwargs.get(encoding.band_option, encoding.bands))
        return None if loaded == rgb else loaded
    if len(encoding.bands) == 3:
        return None
    selector = kwargs.get('transforms')
    if isinstance(selector, SelectBands) and selector.indices == encoding.rgb:
        return None
    return encoding.bands


def check_datamodule(encoding: DatasetEncoding, datamodule: Any, gain: float) -> None:
    """Check at attach time that the datamodule's images are RGB in the scale expected.

    Args:
        encoding: the dataset's encoding.
        datamodule: a TorchGeo datamodule (``kwargs``, ``mean``, ``std`` are read if there).
        gain: the synthetic-to-dataset factor (:func:`synthetic_gain`).

    Raises:
        ValueError: if the dataset has no true-colour RGB, loads other bands than RGB
            (saying how to select them), or normalises another band count or scale.
    """
    if encoding.rgb is None:
        raise ValueError(
            f'{encoding.name} images are {encoding.describe_image()} with no true-colour '
            f'RGB ({encoding.notes}); synthetic RGB samples cannot stand in for them'
        )
    loaded = _rgb_selected(encoding, datamodule)
    if loaded is not None:
        rgb = tuple(encoding.bands[i] for i in encoding.rgb)
        raise ValueError(
            f'RGB bands only: select bands {rgb} (indices {encoding.rgb}) of {encoding.name}: '
            f'{encoding.rgb_path}; the datamodule loads {len(loaded)} bands {loaded}'
        )
    mean = torch.as_tensor(getattr(datamodule, 'mean', 0.0), dtype=torch.float64).flatten()
    std = torch.as_tensor(getattr(datamodule, 'std', 1.0), dtype=torch.float64).flatten()
    for name, value in (('mean', mean), ('std', std)):
        if value.numel() not in (1, 3):
            raise ValueError(
                f'the datamodule normalises {value.numel()} bands ({name} {value.tolist()}); '
                f'synthetic samples are 3 RGB bands: select them ({encoding.rgb_path})'
            )
    # the normalisation must suit the images' scale: a 0..255 dataset with a mean above
    # 255 (or a reflectance one normalised as 8-bit) means the wrong scale somewhere
    if float(mean.max()) > 255 * gain * 1.01:
        raise ValueError(
            f'the datamodule normalises with mean {mean.tolist()}, above synthetic 0..255 '
            f'x {gain:g}; {encoding.name} images are {encoding.describe_image()}: pass '
            f'image_scale=<factor> so synthetic images match ({encoding.notes})'
        )


def check_pixels(image: Tensor, encoding: DatasetEncoding, gain: float) -> None:
    """Check the first raw batch is in the dataset's pixel range (not yet normalised).

    Args:
        image: the batch's images [B, C, H, W].
        encoding: the dataset's encoding.
        gain: the synthetic-to-dataset factor.

    Raises:
        ValueError: if the images exceed the range, or look normalised to 0..1 where the
            dataset is 0..255.
    """
    top = float(image.max()) if image.numel() else 0.0
    if top > encoding.pixel_max * 1.001 or float(image.min()) < 0:
        raise ValueError(
            f'batch images span [{float(image.min()):g}, {top:g}] but {encoding.name} images '
            f'are {encoding.describe_image()}: SyntheticAugmentation takes raw batches before '
            'normalisation (use attach(datamodule, augmentation))'
        )
    looks_unit = image.is_floating_point() and 0 < top <= 1.0 and gain * 255 > 2
    if looks_unit and bool((image != image.round()).any()):
        raise ValueError(
            f'batch images are in 0..{top:g}, but {encoding.name} images are '
            f'{encoding.describe_image()}: the batch looks normalised already; '
            'SyntheticAugmentation takes raw batches (use attach(datamodule, augmentation))'
        )


__all__ = ('check_datamodule', 'check_pixels', 'registered_dataset', 'synthetic_gain')
