# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Fréchet Inception Distance with torch-fidelity's InceptionV3, offline."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # open_clip and torch-fidelity are slow to import: loaded when used
    pass


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate torch-fidelity's InceptionV3 weights without downloading anything.

    Args:
        path: an explicit weights file; ``None`` looks in the torch hub cache
            (``torch.hub.get_dir()/checkpoints``), where torch-fidelity downloads it.

    Returns:
        The weights file.

    Raises:
        FileNotFoundError: if the file is missing, saying where to get it.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f'Inception weights file {str(path)!r} does not exist')
        return Path(path)
    cached = Path(str(torch.hub.get_dir()), 'checkpoints', str(URL_INCEPTION_V3).rsplit('/', 1)[-1])
    if cached.is_file():
        return cached
    raise FileNotFoundError(
        'FID needs the InceptionV3 weights of torch-fidelity and no download is attempted: '
        f'fetch {URL_INCEPTION_V3} on a connected machine and pass its path as '
        f'weights_path, or put it at {cached}; or pass a custom feature=nn.Module'
    )


class FrechetDistance:
    """FID between real and generated images (torchmetrics ``FrechetInceptionDistance``).

    Images are float ``[B, 3, H, W]`` in 0..255, as everywhere in this package. With the
    default InceptionV3 features they are rounded to uint8 (what torchmetrics expects); a
    custom ``feature`` module receives them unchanged and should expose ``num_features``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        feature: Literal[64, 192, 768, 2048] | nn.Module = 2048,
        weights_path: str | Path | None = None,
        device: str | torch.device = 'cpu',
    ) -> None:
        """Initialize a new FrechetDistance.

        Args:
            feature: InceptionV3 feature layer size, or a module mapping images
                ``[B, 3, H, W]`` (0..255) to features ``[B, F]``.
            weights_path: local InceptionV3 weights (see :func:`find_inception_weights`);
                unused with a custom ``feature`` module.
            device: device of the metric.

        Raises:
            FileNotFoundError: if Inception weights are needed and not found (checked before
                anything is built, so nothing tries to download).
        """
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.custom = isinstance(feature, nn.Module)
        path = None if self.custom else str(find_inception_weights(weights_path))
        self.metric = FrechetInceptionDistance(
            feature=feature, feature_extractor_weights_path=path, reset_real_features=False
        ).to(device)

    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of float 0..255 images ``[B, 3, H, W]`` to the real or generated set.

        Raises:
            ValueError: if ``images`` is not ``[B, 3, H, W]``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'images must be [B, 3, H, W], got shape {tuple(images.shape)}')
        images = images.to(self.metric.device)
        if not self.custom:
            images = images.clamp(0, 255).round().to(torch.uint8)
        self.metric.update(images, real=real)

    def compute(self) -> float:
        """The FID between everything added so far (needs >= 2 images per set)."""
        return float(self.metric.compute())

    def reset(self, real: bool = False) -> None:
        """Forget the generated set (and the real set too when ``real``)."""
        self.metric.reset_real_features = real
        self.metric.reset()
        self.metric.reset_real_features = False


def fid(
    real: Tensor | Iterable[Tensor],
    fake: Tensor | Iterable[Tensor],
    feature: Literal[64, 192, 768, 2048] | nn.Module = 2048,
    weights_path: str | Path | None = None,
    device: str | torch.device = 'cpu',
    batch_size: int = 64,
) -> float:
    """FID between two image sets (tensors ``[N, 3, H, W]`` or iterables of batches, 0..255).

    Args:
        real: real images.
        fake: generated images.
        feature: see :class:`FrechetDistance`.
        weights_path: see :class:`FrechetDistance`.
        device: device to compute on.
        batch_size: batch size when a set is given as one tensor.

    Returns:
        The Fréchet distance.
    """
    metric = FrechetDistance(feature, weights_path, device)
    for images, is_real in ((real, True), (fake, False)):
        batches = torch.split(images, batch_size) if isinstance(images, Tensor) else images
        for batch in batches:
            metric.update(batch, real=is_real)
    return metric.compute()


__all__ = (
    'FrechetDistance',
    'fid',
    'find_inception_weights',
)
