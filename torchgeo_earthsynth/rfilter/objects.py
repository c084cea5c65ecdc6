# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""R-Filter's per-object rule: a classifier's score of each box's class inside the box."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import roi_align

from torchgeo_earthsynth.boxes.records import check_boxes
from torchgeo_earthsynth.compat import DETECTION_BOXES, DETECTION_LABELS
from torchgeo_earthsynth.vocabulary import NUM_CLASSES, VOCABULARY


def box_crops(images: Tensor, boxes: Sequence[Tensor], size: int, context: float) -> Tensor:
    """Each box's content, widened by ``context`` on every side, resampled to ``size``.

    Args:
        images: float [B, C, H, W].
        boxes: per image, float [N, 4] ``(x0, y0, x1, y1)`` in pixels.
        size: side of the crops.
        context: share of the box's width/height added on each side.

    Returns:
        float [sum N, C, size, size], the boxes of image 0 first.
    """
    rois = []
    for box in boxes:
        box = box.to(images.device, images.dtype).reshape(-1, 4)
        pad = (box[:, 2:] - box[:, :2]) * context
        rois.append(torch.cat([box[:, :2] - pad, box[:, 2:] + pad], 1))
    crops: Tensor = roi_align(images, rois, output_size=size, spatial_scale=1.0, aligned=True)
    return crops


def object_scores(
    run: Callable[[Tensor], Tensor],
    images: Tensor,
    batch: Mapping[str, Any],
    label_map: Tensor | None,
    size: int,
    context: float,
) -> list[Tensor]:
    """The classifier's probability of each box's own class, inside the box.

    Args:
        run: the classifier on crops: float [N, 3, size, size] in 0..255 -> probabilities
            float [N, K] (it normalises them as it was trained).
        images: float [B, 3, H, W] in 0..255.
        batch: holds the boxes under TorchGeo's detection keys (``bbox_xyxy``: per image
            float [N, 4] pixels; ``label``: per image int [N] vocabulary ids).
        label_map: int64 [K] vocabulary id of each classifier class; None: the classifier
            predicts the 67 vocabulary ids.
        size: side of the crops.
        context: share of each box's size added around it.

    Returns:
        Per image, float [N]: the summed probability of the classifier classes of the box's
        vocabulary id; NaN for a box whose class the classifier does not know.

    Raises:
        ValueError: naming the image, if the boxes or labels are missing or malformed.
    """
    if DETECTION_BOXES not in batch or DETECTION_LABELS not in batch:
        raise ValueError(
            f'the objects rule needs the boxes: batch keys {DETECTION_BOXES!r} and '
            f'{DETECTION_LABELS!r} (per image [N, 4] pixels and [N] vocabulary ids)'
        )
    height, width = int(images.shape[-2]), int(images.shape[-1])
    checked = [
        check_boxes(b, lab, (height, width), f'R-Filter objects rule, image {i}')
        for i, (b, lab) in enumerate(zip(batch[DETECTION_BOXES], batch[DETECTION_LABELS]))
    ]
    if len(checked) != images.shape[0]:
        raise ValueError(f'{len(checked)} box lists for {images.shape[0]} images')
    counts = [len(lab) for _, lab in checked]
    if not sum(counts):
        return [torch.zeros(0) for _ in counts]
    crops = box_crops(images, [b for b, _ in checked], size, context)
    probs = run(crops).float().cpu()
    vocab_map = label_map.cpu() if label_map is not None else torch.arange(probs.shape[1])
    # [N, 67]: probability per vocabulary id (classes sharing an id add up)
    per_id = torch.zeros(probs.shape[0], NUM_CLASSES).index_add_(1, vocab_map, probs)
    known = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    known[vocab_map] = True
    ids = torch.cat([lab for _, lab in checked])
    score = per_id.gather(1, ids[:, None])[:, 0]
    score[~known[ids]] = torch.nan
    return list(torch.split(score, counts))


def object_reason(scores: Tensor, ids: Tensor, threshold: float) -> str:
    """Why an image fails the objects rule (its weakest box), or '' when it passes."""
    weak = (scores < threshold).nonzero().flatten()
    if not len(weak):
        return ''
    worst = int(weak[scores[weak].argmin()])
    return (
        f'objects: box {worst} ({VOCABULARY[int(ids[worst])]}) scores '
        f'{float(scores[worst]):.2f} < {threshold:.2f}'
    )


def probabilities(logits: Tensor, size: int) -> Tensor:
    """Softmax of a classifier's logits [N, K] for ``size`` crops (a ``_run_model`` reducer)."""
    if logits.ndim != 2 or logits.shape[0] != size:
        raise ValueError(
            f'the object classifier must return logits [N, K], got {tuple(logits.shape)}'
        )
    return logits.float().softmax(1)


__all__ = ('box_crops', 'object_reason', 'object_scores', 'probabilities')
