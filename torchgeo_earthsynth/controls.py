# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Condition extractors: batch tensors -> control maps (DESIGN.md "Conditions", ``controls``).

Each extractor maps a batch on its device to float32 [B, C, H, W] in [0, 1], the form of a
``controls`` entry. The names follow CRS-Diff's six local conditions (lines/sketch, soft
edges, road, depth, segmentation) with kornia operators in place of its networks: Canny
and Sobel for edges, a morphological gradient for the sketch, no MiDaS (``depth`` is a DEM,
which remote-sensing users have). :class:`ControlExtractor` builds a whole ``controls``
dict from a TorchGeo-style batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchgeo_earthsynth.conditions import encode_condition
from torchgeo_earthsynth.vocabulary import NUM_CLASSES, VOCABULARY

__all__ = (
    'CONTROLS',
    'CONTROL_NAMES',
    'ROAD_CLASSES',
    'ControlExtractor',
    'ControlSpec',
    'class_map',
    'depth_map',
    'edge_map',
    'road_map',
    'sketch_map',
    'soft_edge_map',
)

#: Vocabulary classes that make up the road map (the road network, not parking pavement).
ROAD_CLASSES: Final[tuple[str, ...]] = ('road', 'overpass', 'intersection')


def _grey(image: Tensor, value_range: float) -> Tensor:
    """[B, 1, H, W] luminance in [0, 1] of [B, C, H, W] images in 0..``value_range``."""
    if image.dim() != 4:
        raise ValueError(f'expected images [B, C, H, W], got shape {tuple(image.shape)}')
    image = image.float() / value_range
    if image.shape[1] == 3:
        return kornia.color.rgb_to_grayscale(image.clamp(0, 1))
    return image.mean(1, keepdim=True).clamp(0, 1)


def _per_image_max_scaled(values: Tensor) -> Tensor:
    """``values`` [B, C, H, W] in grey units divided by each image's maximum.

    A maximum below 1e-3 (rounding noise of a flat image) is not scaled up: a flat image
    stays 0, not all 1.
    """
    peak = values.flatten(1).amax(1).clamp_min(1e-3).view(-1, 1, 1, 1)
    return (values / peak).clamp(0, 1)


def edge_map(
    image: Tensor, value_range: float = 255.0, low: float = 0.1, high: float = 0.2
) -> Tensor:
    """Binary Canny edges (kornia) of images.

    Args:
        image: float [B, C, H, W] in 0..``value_range`` (RGB, or any bands, averaged).
        value_range: the images' maximum (255 for this package's samples).
        low: Canny's low hysteresis threshold on the gradient of [0, 1] grey.
        high: Canny's high threshold.

    Returns:
        float32 [B, 1, H, W], 1 on edges, else 0.
    """
    _, edges = kornia.filters.canny(_grey(image, value_range), low, high)
    return edges.float()


def soft_edge_map(image: Tensor, value_range: float = 255.0) -> Tensor:
    """Soft edges: the Sobel gradient magnitude (kornia's gradient), scaled to each image's maximum.

    Stands in for CRS-Diff's HED soft edges (a network) with a fixed operator.

    Args:
        image: float [B, C, H, W] in 0..``value_range``.
        value_range: the images' maximum.

    Returns:
        float32 [B, 1, H, W] in [0, 1].
    """
    # kornia.filters.sobel adds an epsilon under the root: a flat image would scale to all 1
    gradient = kornia.filters.spatial_gradient(_grey(image, value_range))
    return _per_image_max_scaled(gradient.pow(2).sum(2).sqrt())


def sketch_map(image: Tensor, value_range: float = 255.0, threshold: float = 0.25) -> Tensor:
    """A line drawing: the morphological gradient of the grey image, thresholded.

    Thicker and simpler than Canny edges (outlines of regions, as a hand sketch), from
    kornia's morphology on a 3x3 structuring element.

    Args:
        image: float [B, C, H, W] in 0..``value_range``.
        value_range: the images' maximum.
        threshold: share of each image's strongest gradient that draws a line.

    Returns:
        float32 [B, 1, H, W], 1 on lines, else 0.
    """
    grey = _grey(image, value_range)
    kernel = torch.ones(3, 3, device=grey.device)
    gradient = _per_image_max_scaled(kornia.morphology.gradient(grey, kernel))
    return (gradient > threshold).float()


def road_map(mask: Tensor, road_classes: Sequence[str] = ROAD_CLASSES) -> Tensor:
    """The road map of class masks: 1 where a pixel is one of ``road_classes``.

    Args:
        mask: int [B, H, W] vocabulary ids.
        road_classes: vocabulary names that count as road.

    Returns:
        float32 [B, 1, H, W] in {0, 1}.

    Raises:
        ValueError: for a name not in the vocabulary or masks not [B, H, W].
    """
    unknown = [name for name in road_classes if name not in VOCABULARY]
    if unknown:
        raise ValueError(f'road classes {unknown} are not in the vocabulary')
    if mask.dim() != 3:
        raise ValueError(f'expected masks [B, H, W], got shape {tuple(mask.shape)}')
    ids = torch.tensor([VOCABULARY.index(name) for name in road_classes], device=mask.device)
    return torch.isin(mask.long(), ids).unsqueeze(1).float()


def depth_map(dem: Tensor) -> Tensor:
    """Elevation scaled to [0, 1] per image (min-max over its valid pixels).

    A relative map, as CRS-Diff's MiDaS depth: the lowest valid pixel is 0, the highest 1.
    NaN (no data) becomes 0; a flat image is all 0.

    Args:
        dem: float [B, H, W] or [B, 1, H, W] elevations (any unit), NaN where unknown.

    Returns:
        float32 [B, 1, H, W] in [0, 1].

    Raises:
        ValueError: for another shape.
    """
    if dem.dim() == 3:
        dem = dem.unsqueeze(1)
    if dem.dim() != 4 or dem.shape[1] != 1:
        raise ValueError(f'expected a DEM [B, H, W] or [B, 1, H, W], got {tuple(dem.shape)}')
    dem = dem.float()
    valid = ~dem.isnan()
    low = torch.where(valid, dem, torch.inf).flatten(1).amin(1).view(-1, 1, 1, 1)
    high = torch.where(valid, dem, -torch.inf).flatten(1).amax(1).view(-1, 1, 1, 1)
    span = (high - low).nan_to_num(0, posinf=0, neginf=0)
    scaled = torch.where(span > 0, (dem - low) / span.clamp_min(1e-12), torch.zeros_like(dem))
    return torch.where(valid, scaled, torch.zeros_like(dem)).clamp(0, 1)


def class_map(mask: Tensor, encoding: str = 'palette') -> Tensor:
    """The class mask as a control map.

    Args:
        mask: int [B, H, W] vocabulary ids.
        encoding: ``palette`` (display colours, 3 channels), ``grey`` (``id / 255``, 3
            channels, the EarthSynth ControlNet's input) or ``onehot`` (one channel a class).

    Returns:
        float32 [B, C, H, W] in [0, 1].

    Raises:
        ValueError: for another encoding or masks not [B, H, W].
    """
    if encoding == 'onehot':
        if mask.dim() != 3:
            raise ValueError(f'expected masks [B, H, W], got shape {tuple(mask.shape)}')
        ids = mask.long().clamp(0, NUM_CLASSES - 1)
        return F.one_hot(ids, NUM_CLASSES).permute(0, 3, 1, 2).float().contiguous()
    if encoding not in ('palette', 'grey'):
        raise ValueError(f"encoding must be 'palette', 'grey' or 'onehot', got {encoding!r}")
    return encode_condition(mask, encoding=encoding)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ControlSpec:
    """How one control is made: from which batch key, by which extractor, with how many channels."""

    source: str
    extract: Callable[[Tensor], Tensor]
    channels: int


#: The known controls: name -> how to make it from a batch (``image``, ``mask`` or ``dem``).
CONTROLS: Final[Mapping[str, ControlSpec]] = {
    'edges': ControlSpec('image', edge_map, 1),
    'soft_edges': ControlSpec('image', soft_edge_map, 1),
    'sketch': ControlSpec('image', sketch_map, 1),
    'road': ControlSpec('mask', road_map, 1),
    'depth': ControlSpec('dem', depth_map, 1),
    'seg': ControlSpec('mask', class_map, 3),
}
CONTROL_NAMES: Final[tuple[str, ...]] = tuple(CONTROLS)


class ControlExtractor(nn.Module):
    """Build a ``controls`` dict from a TorchGeo-style batch, on the batch's device.

    Args:
        names: the controls to make, from :data:`CONTROL_NAMES`.

    Raises:
        ValueError: for an unknown name (naming the known ones).
    """

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        unknown = [name for name in names if name not in CONTROLS]
        if unknown:
            raise ValueError(f'unknown controls {unknown}; known: {list(CONTROL_NAMES)}')
        self.names = tuple(names)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The controls of ``batch``; a control whose source key is absent is skipped.

        Args:
            batch: holds ``image`` float [B, C, H, W] 0..255, ``mask`` int [B, H, W] and/or
                ``dem`` float [B, (1,) H, W] as the requested controls need.

        Returns:
            ``{name: float32 [B, C, H, W] in [0, 1]}`` for each control whose source is there.
        """
        return {
            name: CONTROLS[name].extract(batch[CONTROLS[name].source])
            for name in self.names
            if batch.get(CONTROLS[name].source) is not None
        }
