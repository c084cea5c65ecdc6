# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Detection rows of a synthetic batch: bank samples' exact boxes, mapped and put in place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from torchgeo_earthsynth.boxes.records import box_masks, check_boxes, sample_boxes, scale_boxes
from torchgeo_earthsynth.compat import DETECTION_BOXES, DETECTION_LABELS
from torchgeo_earthsynth.vocabulary import BACKGROUND

Batch = dict[str, Any]


@dataclass(frozen=True)
class BoxLabel:
    """The exact label of one synthetic detection row, in downstream class indices.

    Attributes:
        boxes: float32 [N, 4] ``(x0, y0, x1, y1)`` in the batch's pixels.
        labels: int64 [N] downstream class indices.
    """

    boxes: Tensor
    labels: Tensor


def pool_boxes(
    samples: Sequence[Mapping[str, Any]], size: tuple[int, int], origin: str
) -> list[tuple[Tensor, Tensor] | None]:
    """The boxes (vocabulary ids) of each pool sample, scaled to the pool's ``size``.

    Args:
        samples: bank sample dicts; those generated from boxes carry them under TorchGeo's
            detection keys (:func:`~torchgeo_earthsynth.boxes.sample_boxes`).
        size: (height, width) the pool's images are resized to.
        origin: what the samples come from, for messages.

    Returns:
        Per sample ``(float32 [N, 4], int64 [N])``, or None for a sample without boxes (it
        is never drawn for detection: boxes cut from its mask would merge touching objects).

    Raises:
        ValueError: naming the sample, if its boxes are malformed.
    """
    out: list[tuple[Tensor, Tensor] | None] = []
    for i, sample in enumerate(samples):
        found = sample_boxes(sample)
        if found is None:
            out.append(None)
            continue
        own = tuple(int(n) for n in torch.as_tensor(sample['mask']).shape[-2:])
        boxes, labels = check_boxes(*found, (own[0], own[1]), f'{origin}, sample {i}')
        out.append((scale_boxes(boxes, (own[0], own[1]), size), labels))
    return out


def usable_rows(boxes: Sequence[tuple[Tensor, Tensor] | None], inverse: Tensor) -> Tensor:
    """Pool rows that can stand for a detection sample: boxes whose every class maps back.

    Args:
        boxes: per pool row, as :func:`pool_boxes` returns.
        inverse: int64 [67] downstream class per vocabulary id (-1: none).

    Returns:
        Row indices, CPU int64.
    """
    inverse = inverse.cpu()
    rows = [
        i
        for i, found in enumerate(boxes)
        if found is not None and bool((inverse[found[1]] >= 0).all())
    ]
    return torch.tensor(rows, dtype=torch.long)


def downstream_label(
    found: tuple[Tensor, Tensor] | None,
    inverse: Tensor,
    pool_size: tuple[int, int],
    size: tuple[int, int],
) -> BoxLabel:
    """A pool row's boxes in the batch's pixels, their vocabulary ids as downstream classes.

    Args:
        found: ``(boxes, vocabulary ids)`` of the row (:func:`pool_boxes`).
        inverse: int64 [67] downstream class per vocabulary id, on the batch's device.
        pool_size: (height, width) of the pool.
        size: (height, width) of the batch.

    Returns:
        The row's exact label.
    """
    assert found is not None, 'only rows with boxes are drawn (usable_rows)'
    boxes, ids = found
    boxes = scale_boxes(boxes, pool_size, size).to(inverse.device)
    return BoxLabel(boxes, inverse[ids.to(inverse.device)])


def vocabulary_boxes(batch: Batch, rows: Sequence[int], lut: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The boxes of batch rows with their classes as vocabulary ids (CPU), for the bank.

    Boxes of classes without a vocabulary counterpart are left out: the condition generated
    from them (:func:`~torchgeo_earthsynth.transforms.rasterize_boxes`) does not show them;
    boxes are clipped to the image (geometric augmentations may leave them past its edge) and
    those left empty are dropped.

    Args:
        batch: a detection batch (``bbox_xyxy``, ``label`` lists).
        rows: the rows.
        lut: int64 [C] vocabulary id per downstream class.

    Returns:
        Per row, float32 [N, 4] boxes and int64 [N] vocabulary ids.
    """
    height, width = (int(n) for n in batch['image'].shape[-2:])
    limit = torch.tensor([width, height, width, height], dtype=torch.float32)
    out = []
    for row in rows:
        ids = lut.cpu()[torch.as_tensor(batch[DETECTION_LABELS][row]).cpu().long()]
        boxes = torch.as_tensor(batch[DETECTION_BOXES][row]).detach().cpu().float().reshape(-1, 4)
        boxes = boxes.clamp(min=0).minimum(limit)
        keep = (ids != BACKGROUND) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out.append((boxes[keep], ids[keep]))
    return out


def insert_boxes(out: Batch, rows: Sequence[int], labels: Sequence[Any]) -> None:
    """Give synthetic detection rows their own boxes and labels (in place).

    Rows whose label is a :class:`BoxLabel` (bank samples) get its boxes and labels, and,
    when the batch holds per-row instance masks (``mask`` a list, as VHR10's), a filled
    rectangle per box; others (generated from the row's own boxes) keep the real row's.

    Args:
        out: the batch (its lists are copied before changing).
        rows: the output row of each synthetic row.
        labels: the label of each synthetic row (:class:`BoxLabel` or None).
    """
    if not any(isinstance(label, BoxLabel) for label in labels):
        return
    keys = [DETECTION_BOXES, DETECTION_LABELS]
    masks = out.get('mask')
    if isinstance(masks, list):
        keys.append('mask')
    for key in keys:
        out[key] = list(out[key])
    size = (int(out['image'].shape[-2]), int(out['image'].shape[-1]))
    for row, label in zip(rows, labels):
        if not isinstance(label, BoxLabel):
            continue
        real_boxes, real_labels = out[DETECTION_BOXES][row], out[DETECTION_LABELS][row]
        out[DETECTION_BOXES][row] = label.boxes.to(real_boxes)
        out[DETECTION_LABELS][row] = label.labels.to(real_labels)
        if 'mask' in keys:
            real_mask = out['mask'][row]
            out['mask'][row] = box_masks(label.boxes, size).to(real_mask)


__all__ = (
    'BoxLabel',
    'downstream_label',
    'insert_boxes',
    'pool_boxes',
    'usable_rows',
    'vocabulary_boxes',
)
