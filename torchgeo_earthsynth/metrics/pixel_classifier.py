# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A tiny per-pixel classifier, a stand-in segmenter for mask fidelity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchgeo_earthsynth.vocabulary import NUM_CLASSES

if TYPE_CHECKING:  # open_clip and torch-fidelity are slow to import: loaded when used
    pass


class PixelClassifier(nn.Module):
    """A tiny per-pixel classifier: local colour statistics -> class, a stand-in segmenter.

    Each pixel is described by the mean and standard deviation of each colour channel in
    box windows of ``kernel_sizes`` (kornia ``box_blur``, reflect borders), standardised,
    then classified by a linear layer (logistic regression) or, with ``hidden > 0``, a
    one-hidden-layer MLP. Classes never seen in :meth:`fit` get a logit of -1e4. Enough to
    tell how well generated images follow their masks on the mini corpus, where each class has
    its own colour and texture.

    .. versionadded:: 0.1
    """

    feature_mean: Tensor
    feature_std: Tensor
    seen: Tensor

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        kernel_sizes: Sequence[int] = (3, 7),
        hidden: int = 32,
        bands: int = 3,
    ) -> None:
        """Initialize a new, unfitted PixelClassifier.

        Args:
            num_classes: number of output classes (vocabulary ids).
            kernel_sizes: odd box window sizes of the colour statistics.
            hidden: hidden units of the MLP; 0 for logistic regression.
            bands: image channels (3: RGB; a multispectral image's band count, each band
                in 0..255).

        Raises:
            ValueError: if a kernel size is not a positive odd number.
        """
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f'kernel_sizes must be positive odd numbers, got {kernel_sizes}')
        self.num_classes = num_classes
        self.kernel_sizes = tuple(kernel_sizes)
        self.bands = bands
        num_features = 2 * bands * len(self.kernel_sizes)
        self.body: nn.Module = (
            nn.Identity()
            if hidden == 0
            else nn.Sequential(nn.Linear(num_features, hidden), nn.GELU())
        )
        self.out = nn.Linear(hidden or num_features, num_classes)
        self.register_buffer('feature_mean', torch.zeros(num_features))
        self.register_buffer('feature_std', torch.ones(num_features))
        self.register_buffer('seen', torch.zeros(num_classes, dtype=torch.bool))

    def features(self, images: Tensor) -> Tensor:
        """Unstandardised per-pixel features ``[B, 2 * bands * len(kernel_sizes), H, W]``."""
        if images.ndim != 4 or images.shape[1] != self.bands:
            raise ValueError(
                f'images must be [B, {self.bands}, H, W], got shape {tuple(images.shape)}'
            )
        x = images.float() / 255
        out = []
        for k in self.kernel_sizes:
            mean = kornia.filters.box_blur(x, k) if k > 1 else x
            var = (kornia.filters.box_blur(x * x, k) if k > 1 else x * x) - mean * mean
            out += [mean, var.clamp(min=0).sqrt()]
        return torch.cat(out, dim=1)

    def _logits(self, features: Tensor, classes: Tensor | None = None) -> Tensor:
        """Logits ``[N, C]`` of raw features ``[N, F]``; unseen classes get -1e4.

        With ``classes``, only those columns are computed (cheaper while fitting).
        """
        hidden = self.body((features - self.feature_mean) / self.feature_std)
        if classes is not None:
            return F.linear(hidden, self.out.weight[classes], self.out.bias[classes])
        logits: Tensor = self.out(hidden)
        return logits.masked_fill(~self.seen, -1e4)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, num_classes, H, W]`` of float 0..255 images ``[B, 3, H, W]``."""
        feats = self.features(images.to(self.feature_mean.device))
        b, f, h, w = feats.shape
        logits = self._logits(feats.permute(0, 2, 3, 1).reshape(-1, f))
        return logits.view(b, h, w, -1).permute(0, 3, 1, 2)

    @torch.inference_mode()
    def predict(self, images: Tensor) -> Tensor:
        """Class ids ``[B, H, W]`` of float 0..255 images."""
        logits: Tensor = self(images)
        return logits.argmax(1)

    def fit(
        self,
        images: Tensor,
        masks: Tensor,
        steps: int = 300,
        lr: float = 0.05,
        max_pixels: int = 50_000,
        seed: int = 0,
    ) -> PixelClassifier:
        """Fit on real images and their masks (full-batch Adam on sampled pixels).

        Args:
            images: float ``[N, 3, H, W]`` in 0..255.
            masks: int ``[N, H, W]`` class ids.
            steps: optimisation steps.
            lr: Adam learning rate.
            max_pixels: pixels sampled (uniformly) for training.
            seed: seed of the sampling and the initialisation.

        Returns:
            ``self``, in eval mode.

        Raises:
            ValueError: on mismatched shapes or ids outside ``[0, num_classes)``.
        """
        if (
            masks.ndim != 3
            or images.shape[0] != masks.shape[0]
            or images.shape[-2:] != masks.shape[-2:]
        ):
            raise ValueError(
                f'images [N, 3, H, W] and masks [N, H, W] must match, got {tuple(images.shape)} '
                f'and {tuple(masks.shape)}'
            )
        if masks.min() < 0 or masks.max() >= self.num_classes:
            raise ValueError(f'mask ids must lie in [0, {self.num_classes - 1}]')
        device = self.feature_mean.device
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            feats = self.features(images.to(device))
            feats = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
            labels = masks.to(device).reshape(-1).long()
            if len(labels) > max_pixels:
                keep = torch.randperm(len(labels), generator=generator)[:max_pixels].to(device)
                feats, labels = feats[keep], labels[keep]
            self.feature_mean.copy_(feats.mean(0))
            self.feature_std.copy_(feats.std(0).clamp(min=1e-6))
            self.seen.zero_()
            classes = torch.unique(labels)
            self.seen[classes] = True
            targets = torch.searchsorted(classes, labels)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    bound = 1 / math.sqrt(module.in_features)
                    weight = torch.empty(module.weight.shape)  # CPU generator: same on any device
                    module.weight.copy_(weight.uniform_(-bound, bound, generator=generator))
                    module.bias.zero_()
        self.train()
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(self._logits(feats, classes), targets)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        return self.eval()


__all__ = ('PixelClassifier',)
