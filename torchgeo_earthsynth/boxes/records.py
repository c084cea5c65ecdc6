# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Detection boxes as exact labels: checks, instance rasterisation, JSONL records, scaling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import torch
from torch import Tensor

from torchgeo_earthsynth.compat import DETECTION_BOXES, DETECTION_LABELS
from torchgeo_earthsynth.vocabulary import NUM_CLASSES

#: JSONL record fields of a sample's boxes (pixels, ``x0 y0 x1 y1``) and their vocabulary ids.
RECORD_BOXES: Final = 'bbox_xyxy'
RECORD_CLASSES: Final = 'bbox_classes'


def check_boxes(
    boxes: Any, labels: Any, size: tuple[int, int], where: str, num_classes: int = NUM_CLASSES
) -> tuple[Tensor, Tensor]:
    """Check boxes and their class ids against an image size.

    Args:
        boxes: [N, 4] ``(x0, y0, x1, y1)`` in pixels (tensor, array or nested lists).
        labels: [N] class ids (vocabulary ids unless ``num_classes`` says otherwise).
        size: (height, width) of the image.
        where: what holds them, for messages (e.g. a file and line).
        num_classes: labels must lie in ``[0, num_classes)``.

    Returns:
        ``(float32 [N, 4], int64 [N])`` on the CPU.

    Raises:
        ValueError: naming ``where`` and what was expected, on a bad shape, a non-finite or
            empty box, a box outside the image, or a label out of range.
    """
    try:
        box = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu().reshape(-1, 4)
        label = torch.as_tensor(labels).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f'{where}: boxes must be [N, 4] numbers and labels [N] ints ({error})')
    if label.dim() != 1 or len(label) != len(box) or label.is_floating_point():
        raise ValueError(
            f'{where}: expected {len(box)} integer labels for {len(box)} boxes, got '
            f'{tuple(label.shape)} {label.dtype}'
        )
    label = label.long()
    if not torch.isfinite(box).all():
        raise ValueError(f'{where}: boxes hold NaN or infinite values')
    height, width = size
    x0, y0, x1, y1 = box.unbind(1)
    bad = (x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height) | (x1 <= x0) | (y1 <= y0)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise ValueError(
            f'{where}: box {first} = {box[first].tolist()} is empty or leaves the '
            f'{width}x{height} image; expected 0 <= x0 < x1 <= {width}, 0 <= y0 < y1 <= {height}'
        )
    if len(label) and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        raise ValueError(
            f'{where}: box labels {sorted(set(label.tolist()))} must be in [0, {num_classes - 1}]'
        )
    return box, label


def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Where each box is: a pixel belongs to a box when its centre lies inside it.

    ``x0 <= x + 0.5 < x1`` and likewise for y, so boxes that touch share no pixel.

    Args:
        boxes: float [N, 4] ``(x0, y0, x1, y1)`` in pixels.
        size: (height, width).

    Returns:
        bool [N, H, W] (on ``boxes``' device).
    """
    height, width = size
    device = boxes.device
    box = boxes.to(torch.float32).reshape(-1, 4)
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = box.unbind(1)
    return (
        (ys[None, :, None] >= y0[:, None, None])
        & (ys[None, :, None] < y1[:, None, None])
        & (xs[None, None, :] >= x0[:, None, None])
        & (xs[None, None, :] < x1[:, None, None])
    )


def rasterize_instances(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """The box each pixel belongs to (:func:`box_masks`), the smallest box winning.

    Args:
        boxes: float [N, 4] ``(x0, y0, x1, y1)`` in pixels.
        size: (height, width).

    Returns:
        int64 [H, W] box index per pixel, -1 outside every box (on ``boxes``' device).
    """
    box = boxes.to(torch.float32).reshape(-1, 4)
    if not len(box):
        return torch.full(size, -1, dtype=torch.long, device=boxes.device)
    inside = box_masks(box, size)
    area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[:, None, None].expand_as(inside)
    smallest = torch.where(inside, area, torch.inf).argmin(0)
    return torch.where(inside.any(0), smallest, -1)


def scale_boxes(boxes: Tensor, source: tuple[int, int], target: tuple[int, int]) -> Tensor:
    """Boxes of a ``source``-sized image in a ``target``-sized resize of it.

    Args:
        boxes: float [N, 4] in pixels of ``source`` (height, width).
        source: (height, width) the boxes are in.
        target: (height, width) to scale them to.

    Returns:
        float32 [N, 4].
    """
    if tuple(source) == tuple(target):
        return boxes.to(torch.float32)
    sy, sx = target[0] / source[0], target[1] / source[1]
    factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=boxes.device)
    return boxes.to(torch.float32) * factor


def boxes_to_record(boxes: Tensor, labels: Tensor) -> dict[str, list[Any]]:
    """JSONL fields of a sample's boxes (exact float values, vocabulary ids).

    Args:
        boxes: float [N, 4] in pixels.
        labels: int [N] vocabulary ids.

    Returns:
        ``{RECORD_BOXES: [[x0, y0, x1, y1], ...], RECORD_CLASSES: [id, ...]}``.
    """
    return {
        RECORD_BOXES: [[float(v) for v in box] for box in boxes.reshape(-1, 4).tolist()],
        RECORD_CLASSES: [int(v) for v in labels.reshape(-1).tolist()],
    }


def boxes_from_record(
    record: Mapping[str, Any], where: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """A record's boxes, or None when it has none (a mask-only sample).

    The image size is not known here: :func:`check_boxes` checks against it when the sample
    is read.

    Args:
        record: a JSONL record.
        where: the file and line, for messages.

    Returns:
        ``(float32 [N, 4], int64 [N])`` or None.

    Raises:
        ValueError: if only one of the two fields is present or they are malformed.
    """
    has_boxes, has_classes = RECORD_BOXES in record, RECORD_CLASSES in record
    if not (has_boxes or has_classes):
        return None
    if has_boxes != has_classes:
        raise ValueError(
            f'{where}: fields "{RECORD_BOXES}" and "{RECORD_CLASSES}" go together; got only '
            f'"{RECORD_BOXES if has_boxes else RECORD_CLASSES}"'
        )
    boxes, classes = record[RECORD_BOXES], record[RECORD_CLASSES]
    if not (isinstance(boxes, list) and isinstance(classes, list)):
        raise ValueError(f'{where}: "{RECORD_BOXES}" and "{RECORD_CLASSES}" must be lists')
    if not all(isinstance(b, list) and len(b) == 4 for b in boxes):
        raise ValueError(f'{where}: "{RECORD_BOXES}" must be a list of [x0, y0, x1, y1]')
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        raise ValueError(f'{where}: "{RECORD_CLASSES}" must be a list of vocabulary ids')
    box, label = check_boxes(boxes, classes, (2**31, 2**31), where)
    return box.numpy(), label.numpy()


def sample_boxes(sample: Mapping[str, Any]) -> tuple[Tensor, Tensor] | None:
    """A sample dict's boxes and labels under the TorchGeo detection keys, if it has them.

    Args:
        sample: a sample dict.

    Returns:
        ``(boxes, labels)`` or None.
    """
    if DETECTION_BOXES not in sample:
        return None
    labels = sample.get(DETECTION_LABELS)
    return torch.as_tensor(sample[DETECTION_BOXES]), torch.as_tensor(
        labels if labels is not None else []
    )


__all__ = (
    'RECORD_BOXES',
    'RECORD_CLASSES',
    'box_masks',
    'boxes_from_record',
    'boxes_to_record',
    'check_boxes',
    'rasterize_instances',
    'sample_boxes',
    'scale_boxes',
)
