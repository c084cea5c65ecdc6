# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""How each task's labels and conditions are made: vocabulary masks, boxes, batch checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from torchgeo_earthsynth.boxes.records import rasterize_instances
from torchgeo_earthsynth.encodings.registry import DatasetEncoding
from torchgeo_earthsynth.vocabulary import BACKGROUND, NUM_CLASSES, prompt_from_ids

from .synthetic_sources import Task

Batch = dict[str, Any]


class LabelTables:
    """Downstream value <-> vocabulary id tables of one dataset encoding, copied per device.

    Attributes:
        classes: the downstream classes.
        lut: int64 [max value + 1] vocabulary id per mask (or label) value.
        inverse: int64 [67] downstream value per vocabulary id: the first class of an id
            (never a no-data value), else ``unmapped_index``, else -1 (bank samples with -1
            ids are not drawn).
        recomposed: like ``inverse``, for pixels CF-Comp moved: ids without a class become
            ``ignore_index`` (default: the dataset's no-data value), else the background
            class (-1 only when neither exists).
    """

    def __init__(
        self,
        encoding: DatasetEncoding,
        unmapped_index: int | None = None,
        ignore_index: int | None = None,
    ) -> None:
        """Initialize new LabelTables.

        Args:
            encoding: the dataset's encoding (mask values and their vocabulary ids).
            unmapped_index: downstream value of vocabulary ids outside the classes.
            ignore_index: the downstream dataset's ignore (nodata) value, if any (default:
                the encoding's first no-data value).

        Raises:
            ValueError: if ``unmapped_index`` is not a class value of the encoding.
        """
        self.classes = encoding.classes
        self.lut = encoding.lut()
        usable = sorted(v for v in encoding.values if v not in encoding.ignore)
        if unmapped_index is not None and unmapped_index not in usable:
            contiguous = usable == list(range(usable[0], usable[-1] + 1))
            where = f'in [{usable[0]}, {usable[-1]}]' if contiguous else f'one of {usable}'
            raise ValueError(
                f'unmapped_index must be {where} (a class value of {encoding.name}), got '
                f'{unmapped_index}'
            )
        self.inverse = encoding.inverse(unmapped_index)
        if ignore_index is None and encoding.ignore:
            ignore_index = encoding.ignore[0]
        background = int(self.inverse[BACKGROUND])
        #: The label of recomposed pixels without a class; None: no ignore index, no background.
        self.recomposed_fill: int | None = ignore_index
        if ignore_index is None and background >= 0:
            self.recomposed_fill = background
        self.recomposed = self.inverse.clone()
        if self.recomposed_fill is not None:
            self.recomposed[self.inverse < 0] = self.recomposed_fill
        self._devices: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    def on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """``(lut, inverse, recomposed)`` on ``device``."""
        if device not in self._devices:
            self._devices[device] = (
                self.lut.to(device),
                self.inverse.to(device),
                self.recomposed.to(device),
            )
        return self._devices[device]


def to_vocab(mask: Tensor, lut: Tensor) -> Tensor:
    """Downstream class ids -> vocabulary ids (ignore/nodata values become background)."""
    mask = mask.long()
    inside = (mask >= 0) & (mask < len(lut))
    return torch.where(inside, lut[mask.clamp(0, len(lut) - 1)], BACKGROUND)


def present_prompts(cond: Tensor) -> tuple[list[str], Tensor]:
    """Template prompts and multi-hot float [N, 67] of vocabulary masks [N, H, W]."""
    present = torch.zeros(cond.shape[0], NUM_CLASSES, device=cond.device)
    present.scatter_(1, cond.reshape(cond.shape[0], -1).long(), 1.0)
    rows = present.cpu().bool().tolist()
    prompts = [prompt_from_ids(i for i, on in enumerate(row) if on) for row in rows]
    return prompts, present


def rasterize_boxes(
    boxes: Sequence[Tensor], labels: Sequence[Tensor], lut: Tensor, size: tuple[int, int]
) -> Tensor:
    """Rasterise detection boxes into vocabulary-id masks (the ControlNet condition).

    A pixel belongs to a box when its centre lies inside it (``x0 <= x + 0.5 < x1``, likewise
    for y); it takes the vocabulary id of its box's class, the smallest box winning where
    boxes overlap (so small objects stay visible on large ones); other pixels are background
    (:func:`~torchgeo_earthsynth.boxes.rasterize_instances`: which box each pixel shows).

    Args:
        boxes: per image, float [N, 4] ``(x0, y0, x1, y1)`` in pixels (TorchGeo's
            ``bbox_xyxy``).
        labels: per image, int [N] downstream class indices (TorchGeo's ``label``).
        lut: int64 [C] vocabulary id per downstream class
            (:func:`~torchgeo_earthsynth.encodings.label_map`).
        size: (height, width) of the masks.

    Returns:
        int64 [B, H, W] vocabulary-id masks on the device of ``lut``.

    Raises:
        ValueError: if boxes and labels disagree or a label is outside ``lut``.

    .. versionadded:: 0.1
    """
    if len(boxes) != len(labels):
        raise ValueError(f'{len(boxes)} box tensors but {len(labels)} label tensors')
    out = torch.zeros(len(boxes), *size, dtype=torch.long, device=lut.device)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        box = box.to(lut.device, torch.float32).reshape(-1, 4)
        label = label.to(lut.device, torch.long).reshape(-1)
        if box.shape[0] != label.shape[0]:
            raise ValueError(f'image {i}: {box.shape[0]} boxes but {label.shape[0]} labels')
        if not len(box):
            continue
        if int(label.min()) < 0 or int(label.max()) >= len(lut):
            raise ValueError(
                f'image {i}: box labels must be in [0, {len(lut) - 1}], got '
                f'{sorted(set(label.tolist()))}'
            )
        instance = rasterize_instances(box, size)
        out[i] = torch.where(instance >= 0, lut[label][instance.clamp(min=0)], BACKGROUND)
    return out


#: The batch keys each task needs.
TASK_KEYS: dict[str, tuple[str, ...]] = {
    'segmentation': ('image', 'mask'),
    'classification': ('image', 'label'),
    'detection': ('image', 'bbox_xyxy', 'label'),
}


def check_batch(
    batch: Batch, task: Task, classes: Sequence[str], rgb_path: str = '', channels: int = 3
) -> Tensor:
    """Check that a raw batch holds what ``task`` needs.

    Args:
        batch: the collated batch.
        task: the downstream task.
        classes: the downstream classes.
        rgb_path: how to load only the RGB bands, for the error on other band counts.
        channels: the band count synthetic samples have: 3 (RGB), or the bands a
            multispectral generator is mapped to.

    Returns:
        The batch's images.

    Raises:
        ValueError: naming the key and what was expected.
    """
    if not isinstance(batch, Mapping):
        raise ValueError(f'SyntheticAugmentation expects a dict batch, got {type(batch)}')
    need = TASK_KEYS[task]
    missing = [key for key in need if key not in batch]
    if missing:
        raise ValueError(
            f'task={task!r} needs batch keys {list(need)}; missing '
            f'{missing} (batch has {sorted(batch)})'
        )
    image = batch['image']
    if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != channels:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        if channels != 3:
            raise ValueError(
                f'batch["image"] must be a tensor [B, {channels}, H, W] (the bands the '
                f'generator is mapped to), got {got}; attach(datamodule, augmentation) so '
                'the bands the datamodule loads are known'
            )
        hint = f'; RGB bands only: {rgb_path}' if rgb_path else ''
        raise ValueError(f'batch["image"] must be a tensor [B, 3, H, W] (RGB), got {got}{hint}')
    if task == 'segmentation':
        mask = batch['mask']
        if not isinstance(mask, Tensor) or mask.shape != (image.shape[0], *image.shape[2:]):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f'batch["mask"] must be an int tensor [B, H, W] matching the '
                f'image {tuple(image.shape)}, got {got}'
            )
    elif task == 'classification':
        label = batch['label']
        if not isinstance(label, Tensor) or label.shape != (image.shape[0],):
            got = tuple(label.shape) if isinstance(label, Tensor) else type(label).__name__
            raise ValueError(
                f'batch["label"] must be an int tensor [B] of class indices (multiclass), got {got}'
            )
        if len(label) and (int(label.min()) < 0 or int(label.max()) >= len(classes)):
            raise ValueError(
                f'batch["label"] holds {sorted(set(label.tolist()))}; '
                f'expected indices of {tuple(classes)}'
            )
    return image


def online_conditions(
    batch: Batch, task: Task, lut: Tensor, size: tuple[int, int], cf_comp: nn.Module | None
) -> Tensor | None:
    """Vocabulary-id conditions of the whole batch (segmentation, detection), else None.

    Args:
        batch: the raw batch.
        task: the downstream task.
        lut: int64 [C] vocabulary id per downstream class, on the batch's device.
        size: (height, width) of the batch.
        cf_comp: batch module recomposing segmentation conditions counterfactually, if any.

    Returns:
        int64 [B, H, W] conditions, or None for classification (layouts are drawn per row).
    """
    match task:
        case 'segmentation':
            cond = to_vocab(batch['mask'], lut)
            if cf_comp is not None:
                cond = _recompose(batch, cond, cf_comp)
            return cond
        case 'detection':
            return rasterize_boxes(batch['bbox_xyxy'], batch['label'], lut, size)
    return None


def _recompose(batch: Batch, cond: Tensor, cf_comp: nn.Module) -> Tensor:
    """Run CF-Comp over the batch's vocabulary conditions."""
    prompts, present = present_prompts(cond)
    source = batch.get('source')
    vocab_batch = {
        'image': batch['image'],
        'mask': cond,
        'prompt': prompts,
        'categories': present,
        'source': list(source) if isinstance(source, list) else ['real'] * len(cond),
    }
    if isinstance(cf_comp, nn.Module):
        cf_comp.to(cond.device)
    composed: Tensor = cf_comp(vocab_batch)['mask']
    return composed.long()


def segmentation_label(real: Tensor, cond: Tensor, lut: Tensor, recomposed: Tensor) -> Tensor:
    """The label mask of a sample generated from a (possibly recomposed) real mask.

    Pixels whose condition CF-Comp changed get the class of their new vocabulary id (an id
    without a class, e.g. background moved by tiling, gets ``recomposed``'s fill: the ignore
    index or the background class, never -1); others keep their real label, so the label is
    exact for the condition.

    Args:
        real: int [H, W] the real sample's downstream mask.
        cond: int64 [H, W] the vocabulary-id condition the sample was generated from.
        lut: int64 [C] vocabulary id per downstream class (on ``real``'s device).
        recomposed: int64 [67] downstream class per vocabulary id (:class:`LabelTables`).

    Returns:
        The downstream mask, dtype of ``real``.
    """
    unchanged = to_vocab(real, lut) == cond
    return torch.where(unchanged, real, recomposed[cond].to(real.dtype))


__all__ = (
    'TASK_KEYS',
    'LabelTables',
    'check_batch',
    'online_conditions',
    'present_prompts',
    'rasterize_boxes',
    'segmentation_label',
    'to_vocab',
)
