# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Mask fidelity: how well a segmenter recovers the condition masks from generated images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassJaccardIndex

from torchgeo_earthsynth.vocabulary import NUM_CLASSES, VOCABULARY

if TYPE_CHECKING:  # open_clip and torch-fidelity are slow to import: loaded when used
    pass


Segmenter = Callable[[Tensor], Tensor]


def miou_from_confusion(
    confusion: Tensor, ignore_index: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The package's one mIoU definition: the mean IoU over the classes in the target.

    IoU of class ``c`` is ``hits / (target pixels of c + predicted pixels of c - hits)``;
    the mean runs over the classes present in the target (rows of ``confusion``), leaving out
    ``ignore_index``. A class predicted where the target has none is not averaged itself but
    still costs: its pixels lower the IoU of the target classes they belong to. Both R-Filter's
    layout rule (per sample, :func:`per_sample_miou`) and :class:`MaskFidelity` (over a data
    set) score with it.

    Args:
        confusion: int [..., K, K] confusion matrices, rows target, columns prediction.
        ignore_index: a class left out of the mean (its pixels should not be counted).

    Returns:
        ``(miou [...], iou [..., K], present [..., K])``: float32 mIoU (NaN with no class to
        score), IoU per class and which classes are averaged.
    """
    inter = confusion.diagonal(dim1=-2, dim2=-1)
    target = confusion.sum(-1)
    union = target + confusion.sum(-2) - inter
    present = target > 0
    if ignore_index is not None and 0 <= ignore_index < confusion.shape[-1]:
        present[..., ignore_index] = False
    iou = inter.float() / union.clamp(min=1).float()
    miou = (iou * present).sum(-1) / present.sum(-1)  # 0 / 0 -> NaN: nothing to score
    return miou, iou, present


def per_sample_miou(
    pred: Tensor, target: Tensor, num_classes: int | None = None, ignore_index: int | None = 0
) -> Tensor:
    """Mean IoU of each sample over the classes in its target (:func:`miou_from_confusion`).

    Counts with one ``bincount`` over ``sample * K + class``: torchmetrics one-hot encodes to
    [B, K, H, W] int64 (GBs at 512 px and 67 classes).

    Args:
        pred: int [B, H, W] predicted class ids.
        target: int [B, H, W] reference class ids (>= 0).
        num_classes: at least this many classes (more if ids are larger).
        ignore_index: pixels whose target is this id are ignored and the class is left out of
            the mean; None keeps every pixel and class.

    Returns:
        float32 [B]; NaN for a sample with no class to score (e.g. all pixels ignored).

    Raises:
        ValueError: if shapes differ or ids are negative.
    """
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(
            f'pred and target must both be [B, H, W]; got {tuple(pred.shape)} and '
            f'{tuple(target.shape)}'
        )
    pred, target = pred.long(), target.long().to(pred.device)
    b = pred.shape[0]
    if pred.numel() == 0:
        return torch.zeros(b, device=pred.device)
    (pred_low, pred_high), (target_low, target_high) = pred.aminmax(), target.aminmax()
    low = int(torch.minimum(pred_low, target_low))
    if low < 0:
        raise ValueError(f'class ids must be >= 0, got {low}')
    k = max(num_classes or 0, int(torch.maximum(pred_high, target_high)) + 1)
    # One bincount of (sample, target, prediction) triples: per-sample confusion matrices.
    n = b * k * k
    ids = (torch.arange(b, device=pred.device).view(b, 1, 1) * k + target) * k + pred
    if ignore_index is not None:  # ignored pixels go to an extra bin n, dropped below
        ids = ids.masked_fill(target == ignore_index, n)
    confusion = torch.bincount(ids.flatten(), minlength=n + 1)[:n].view(b, k, k)
    return miou_from_confusion(confusion, ignore_index)[0]


class PresentClassIoU(Metric):
    """mIoU over the classes present in the target: one definition, per-class IoU kept.

    Accumulates a confusion matrix; :meth:`compute` returns the mean IoU of the classes
    that occur in the accumulated targets (a class the split does not contain cannot be
    scored, and predicting it anyway costs the present classes' IoU through false
    positives). The last per-class IoU is kept in :attr:`per_class` (NaN where a class is
    neither present nor predicted, 0 where it is predicted but absent).

    .. versionadded:: 0.1
    """

    full_state_update = False
    confusion: Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        """Initialize a new PresentClassIoU instance.

        Args:
            num_classes: number of classes.
            ignore_index: target value to leave out, if any.
        """
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_class: Tensor = torch.full((num_classes,), float('nan'))
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state('confusion', default=zeros, dist_reduce_fx='sum')

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch.

        Args:
            preds: logits [B, C, H, W] or class indices [B, H, W].
            target: class indices [B, H, W].
        """
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        keep = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
        index = target[keep].long() * self.num_classes + preds[keep].long()
        counts = torch.bincount(index, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> Tensor:
        """The mean IoU over classes present in the targets (NaN if none is).

        Returns:
            A scalar tensor.
        """
        miou, iou, _ = miou_from_confusion(self.confusion)
        union = self.confusion.sum(0) + self.confusion.sum(1) - self.confusion.diagonal()
        self.per_class = torch.where(union > 0, iou, float('nan')).cpu()
        return miou


@dataclass(frozen=True)
class MaskFidelityResult:
    """How well a segmenter recovers the condition masks from generated images.

    Attributes:
        miou: mean IoU over the classes present in the condition masks.
        per_class: IoU per present class, by vocabulary name (ascending id).
        pixel_accuracy: share of scored pixels labelled correctly.
        num_pixels: pixels scored.
        ignored_pixels: pixels left out (``ignore_index``, or classes the segmenter cannot
            predict).
    """

    miou: float
    per_class: dict[str, float]
    pixel_accuracy: float
    num_pixels: int
    ignored_pixels: int


class MaskFidelity:
    """Mask fidelity: (m)IoU of a segmenter's prediction on generated images vs their masks.

    The segmenter is any callable mapping float 0..255 images ``[B, 3, H, W]`` to logits
    ``[B, C, h, w]`` (resized bilinearly to the mask) or labels ``[B, H, W]``: a
    :class:`PixelClassifier`, or a wrapped TorchGeo ``SemanticSegmentationTask`` (normalise as
    its datamodule does). ``label_map[c]`` gives the vocabulary id of segmenter class ``c``
    (e.g. :func:`torchgeo_earthsynth.encodings.label_map`); without it segmenter class ``c``
    is vocabulary id ``c``.

    Pixels are counted in torchmetrics' ``MulticlassJaccardIndex`` confusion matrix; the mIoU
    is the package's one definition, :func:`miou_from_confusion`: the mean over classes
    present in the condition masks (a class the segmenter predicts where the mask has none is
    still penalised, through the IoU of the class the mask does have), the same as R-Filter's
    layout rule per sample (:func:`per_sample_miou`).
    Mask pixels of classes the segmenter cannot output are not scored when
    ``ignore_unpredictable`` (a LoveDA segmenter cannot see vehicles).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        segmenter: Segmenter,
        label_map: Tensor | Sequence[int] | None = None,
        num_classes: int = NUM_CLASSES,
        class_names: Sequence[str] = VOCABULARY,
        ignore_index: int | None = None,
        ignore_unpredictable: bool = True,
    ) -> None:
        """Initialize a new MaskFidelity.

        Args:
            segmenter: images -> logits (or labels), see above.
            label_map: segmenter class -> vocabulary id lookup table.
            num_classes: number of mask classes (the vocabulary's by default).
            class_names: names of the mask classes.
            ignore_index: a mask class not scored (e.g. 0 for background).
            ignore_unpredictable: leave out mask pixels of classes outside ``label_map``.

        Raises:
            ValueError: if ``label_map`` or ``class_names`` do not fit ``num_classes``.
        """
        self.segmenter = segmenter
        self.lut = None if label_map is None else torch.as_tensor(label_map, dtype=torch.long)
        if self.lut is not None and (self.lut.min() < 0 or self.lut.max() >= num_classes):
            raise ValueError(f'label_map values must lie in [0, {num_classes - 1}]')
        if len(class_names) != num_classes:
            raise ValueError(f'{len(class_names)} class_names for {num_classes} classes')
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.ignore_unpredictable = ignore_unpredictable and self.lut is not None
        self.jaccard = MulticlassJaccardIndex(num_classes, average=None, ignore_index=-1)
        self.ignored = 0

    @torch.inference_mode()
    def predict(self, images: Tensor, size: tuple[int, int]) -> Tensor:
        """Vocabulary-id predictions ``[B, *size]`` of the segmenter."""
        out = self.segmenter(images)
        if out.ndim == 4:
            if out.shape[-2:] != size:
                out = F.interpolate(out.float(), size=size, mode='bilinear', align_corners=False)
            out = out.argmax(1)
        elif out.ndim != 3 or out.is_floating_point():
            raise ValueError(
                'segmenter must return logits [B, C, H, W] or integer labels [B, H, W], got '
                f'{out.dtype} {tuple(out.shape)}'
            )
        elif out.shape[-2:] != size:
            out = F.interpolate(out[:, None].float(), size=size, mode='nearest')[:, 0].long()
        return out.long() if self.lut is None else self.lut.to(out.device)[out.long()]

    def update(self, images: Tensor, masks: Tensor) -> None:
        """Score a batch of generated images against their condition masks.

        Args:
            images: float ``[B, 3, H, W]`` in 0..255.
            masks: int ``[B, H, W]`` class ids.

        Raises:
            ValueError: on mismatched shapes or ids outside ``[0, num_classes)``.
        """
        if images.ndim != 4 or masks.ndim != 3 or len(images) != len(masks):
            raise ValueError(
                f'images must be [B, 3, H, W] and masks [B, H, W]; got {tuple(images.shape)} '
                f'and {tuple(masks.shape)}'
            )
        if masks.numel() and (masks.min() < 0 or masks.max() >= self.num_classes):
            raise ValueError(f'mask ids must lie in [0, {self.num_classes - 1}]')
        pred = self.predict(images, tuple(masks.shape[-2:]))  # type: ignore[arg-type]
        target = masks.to(pred.device).long().clone()
        ignore = torch.zeros_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            ignore |= target == self.ignore_index
        if self.ignore_unpredictable:
            assert self.lut is not None
            known = torch.zeros(self.num_classes, dtype=torch.bool, device=target.device)
            known[self.lut.to(target.device)] = True
            ignore |= ~known[target]
        target[ignore] = -1
        self.ignored += int(ignore.sum())
        self.jaccard = self.jaccard.to(pred.device)
        self.jaccard.update(pred, target)

    def compute(self) -> MaskFidelityResult:
        """The result over everything scored so far.

        Raises:
            RuntimeError: if no pixel has been scored.
        """
        confmat = self.jaccard.confmat  # rows: target, columns: prediction
        total = int(confmat.sum())
        if total == 0:
            raise RuntimeError('MaskFidelity.compute() called before any scored pixel')
        miou, iou, present = miou_from_confusion(confmat.cpu(), self.ignore_index)
        ids = present.nonzero().flatten().tolist()
        per_class = {self.class_names[i]: float(iou[i]) for i in ids}
        return MaskFidelityResult(
            miou=float(miou),
            per_class=per_class,
            pixel_accuracy=float(confmat.diagonal().sum()) / total,
            num_pixels=total,
            ignored_pixels=self.ignored,
        )

    def reset(self) -> None:
        """Forget everything scored."""
        self.jaccard.reset()
        self.ignored = 0


def mask_fidelity(
    segmenter: Segmenter,
    images: Tensor,
    masks: Tensor,
    label_map: Tensor | Sequence[int] | None = None,
    ignore_index: int | None = None,
    batch_size: int = 16,
) -> MaskFidelityResult:
    """Mask fidelity of generated ``images`` against their condition ``masks`` in one call.

    Args:
        segmenter: see :class:`MaskFidelity`.
        images: float ``[N, C, H, W]`` in 0..255 (C: the segmenter's bands).
        masks: int ``[N, H, W]`` vocabulary ids.
        label_map: segmenter class -> vocabulary id.
        ignore_index: a vocabulary id not scored.
        batch_size: images per segmenter call.

    Returns:
        The :class:`MaskFidelityResult`.
    """
    metric = MaskFidelity(segmenter, label_map=label_map, ignore_index=ignore_index)
    for i in range(0, len(images), batch_size):
        metric.update(images[i : i + batch_size], masks[i : i + batch_size])
    return metric.compute()


__all__ = (
    'MaskFidelity',
    'MaskFidelityResult',
    'PresentClassIoU',
    'Segmenter',
    'mask_fidelity',
    'miou_from_confusion',
    'per_sample_miou',
)
