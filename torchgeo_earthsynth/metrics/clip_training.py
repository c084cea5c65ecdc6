# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""An offline CLIP: the tiny open_clip model trained contrastively on image-caption pairs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import trange

from torchgeo_earthsynth.metrics.clip import ClipScorer, tiny_open_clip

__all__ = ('train_clip',)

#: open_clip clamps ``logit_scale`` to log(100) while training.
_MAX_LOGIT_SCALE = 4.6052


def train_clip(
    images: Tensor,
    captions: Sequence[str],
    *,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = 'cpu',
    progress: bool = False,
) -> ClipScorer:
    """Train :func:`~torchgeo_earthsynth.metrics.tiny_open_clip` on image-caption pairs.

    An alignment scorer for machines without CLIP weights: train it on real images and their
    captions (the training scenes, never the scenes it will score), then score held-out or
    generated images. Each step draws a random batch, flips and rotates it by a right angle
    (remote-sensing scenes have no up), and minimises open_clip's ``ClipLoss``. Captions
    repeat in EarthSynth-style corpora (one class list describes many scenes); a repeated
    caption's text features are one feature, so CLIP's loss needs no change for them (the
    cross-entropy of duplicated columns equals that of columns sharing their mass).
    The global random state is left untouched.

    Args:
        images: float ``[N, 3, H, W]`` in 0..255 (resized to the model's 32 px).
        captions: one caption per image.
        steps: optimizer steps.
        batch_size: pairs per step.
        lr: AdamW learning rate (weight decay 0.1, as CLIP).
        seed: seed of the initialisation and of the batches.
        device: where to train.
        progress: show a progress bar.

    Returns:
        A :class:`~torchgeo_earthsynth.metrics.ClipScorer` over the trained model (eval mode).

    Raises:
        ValueError: if the numbers of images and captions differ, fewer than two pairs are
            given, or ``steps``/``batch_size`` < 1.

    .. versionadded:: 0.4
    """
    if len(images) != len(captions):
        raise ValueError(f'got {len(images)} images but {len(captions)} captions')
    if len(images) < 2:
        raise ValueError(f'contrastive training needs >= 2 image-caption pairs, got {len(images)}')
    if steps < 1 or batch_size < 1:
        raise ValueError(f'steps and batch_size must be >= 1, got {steps} and {batch_size}')
    import open_clip

    model, tokenizer, _ = tiny_open_clip(seed)
    model = model.to(device)
    scorer = ClipScorer(model, tokenizer, pretrained=True)
    with torch.no_grad():
        pixels = torch.cat([scorer.preprocess(chunk) for chunk in torch.split(images, 256)])
    tokens = tokenizer(list(captions)).to(device)
    clip_loss = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in trange(steps, desc='train CLIP', disable=not progress):
        batch = torch.randperm(len(captions), generator=generator)[:batch_size].to(device)
        x = torch.rot90(pixels[batch], step % 4, (-2, -1))
        x = x.flip(-1) if (step // 4) % 2 else x
        loss = clip_loss(
            model.encode_image(x, normalize=True),
            model.encode_text(tokens[batch], normalize=True),
            model.logit_scale.exp(),
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, _MAX_LOGIT_SCALE)
    return ClipScorer(model.eval(), tokenizer, pretrained=True, batch_size=scorer.batch_size)
