# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""How synthetic rows are put into a batch (replacing or appending) and described."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import torch
from torch import Tensor

from torchgeo_earthsynth.origins import SampleOrigin
from torchgeo_earthsynth.vocabulary import NUM_CLASSES, prompt_from_ids

from .synthetic_boxes import insert_boxes
from .synthetic_labels import present_prompts
from .synthetic_sources import Task

Batch = dict[str, Any]

#: Codes of :attr:`SyntheticPlan.origin` (:class:`~torchgeo_earthsynth.origins.SampleOrigin`).
REAL: Final = SampleOrigin.REAL
GENERATED: Final = SampleOrigin.GENERATED
BANK: Final = SampleOrigin.BANK


@dataclass(frozen=True)
class SyntheticPlan:
    """What :class:`SyntheticAugmentation` did to one batch (tensors on the batch's device).

    Attributes:
        origin: int64 [B_out]: :data:`REAL`, :data:`GENERATED` or :data:`BANK` per output row.
        source_index: int64 [B_out]: the input row each output row is (``REAL``), replaces
            (``mode='replace'``) or was appended for (``mode='append'``).
        condition: int64 [B_out, H, W]: the vocabulary-id mask behind each synthetic row (the
            ControlNet condition, or the bank sample's mask); -1 on real rows.

    .. versionadded:: 0.1
    """

    origin: Tensor
    source_index: Tensor
    condition: Tensor

    @property
    def synthetic(self) -> Tensor:
        """Where the rows are synthetic: bool [B_out]."""
        return self.origin != REAL


@dataclass
class SyntheticRows:
    """Synthetic rows waiting to go into a batch, one entry per row."""

    rows: list[int]  # the input row each one replaces or is appended for
    origins: list[int]  # GENERATED or BANK
    images: list[Tensor]  # float [3, H, W] in 0..255
    conditions: list[Tensor]  # int64 [H, W] vocabulary ids
    #: int [H, W] downstream mask (segmentation), a BoxLabel (detection from the bank), else None
    labels: list[Any]

    def add(self, row: int, origin: int, image: Tensor, condition: Tensor, label: Any) -> None:
        """Queue one synthetic row."""
        self.rows.append(row)
        self.origins.append(origin)
        self.images.append(image)
        self.conditions.append(condition)
        self.labels.append(label)


def insert_rows(
    batch: Batch,
    synthetic: SyntheticRows,
    task: Task,
    mode: Literal['replace', 'append'],
    lut: Tensor,
    size: tuple[int, int],
    device: torch.device,
) -> tuple[Batch, SyntheticPlan]:
    """Replace rows of ``batch`` by (or append to it) the synthetic rows.

    Args:
        batch: the raw batch.
        synthetic: the synthetic rows.
        task: the downstream task (segmentation rows replace the mask too).
        mode: ``replace`` the source rows or ``append`` after the batch.
        lut: int64 [C] vocabulary id per downstream class (classification prompts).
        size: (height, width) of the batch.
        device: the batch's device.

    Returns:
        The new batch (``batch`` itself when there is no synthetic row) and its plan.
    """
    rows = synthetic.rows
    b = batch['image'].shape[0]
    origin = torch.zeros(b, dtype=torch.long, device=device)
    source_index = torch.arange(b, device=device)
    condition = torch.full((b, *size), -1, dtype=torch.long, device=device)
    if not rows:
        return batch, SyntheticPlan(origin, source_index, condition)
    index = torch.tensor(rows, device=device)
    synth_image = torch.stack(synthetic.images).to(batch['image'].dtype)
    synth_cond = torch.stack(synthetic.conditions).long()
    # classification prompts name the label's class
    classes = None
    if task == 'classification':
        classes = [int(batch['label'][r]) for r in rows]
    out = dict(batch)
    if mode == 'replace':
        out['image'] = batch['image'].clone()
        out['image'][index] = synth_image
        if task == 'segmentation':
            out['mask'] = batch['mask'].clone()
            out['mask'][index] = torch.stack([x for x in synthetic.labels if x is not None]).to(
                batch['mask'].dtype
            )
        describe_rows(out, rows, synth_cond, classes, lut)
        if task == 'detection':
            insert_boxes(out, rows, synthetic.labels)
        origin[index] = torch.tensor(synthetic.origins, device=device)
        condition[index] = synth_cond
        return out, SyntheticPlan(origin, source_index, condition)
    # append: copy every other per-sample field from the source row
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.dim() and value.shape[0] == b:
            out[key] = torch.cat([value, value[index.to(value.device)]])
        elif isinstance(value, list) and len(value) == b:
            out[key] = value + [value[r] for r in rows]
    out['image'] = torch.cat([batch['image'], synth_image])
    if task == 'segmentation':
        synth_mask = torch.stack([x for x in synthetic.labels if x is not None])
        out['mask'] = torch.cat([batch['mask'], synth_mask.to(batch['mask'].dtype)])
    describe_rows(out, list(range(b, b + len(rows))), synth_cond, classes, lut)
    if task == 'detection':
        insert_boxes(out, list(range(b, b + len(rows))), synthetic.labels)
    plan = SyntheticPlan(
        torch.cat([origin, torch.tensor(synthetic.origins, device=device)]),
        torch.cat([source_index, index]),
        torch.cat([condition, synth_cond]),
    )
    return out, plan


def describe_rows(
    out: Batch, rows: list[int], cond: Tensor, labels: list[int] | None, lut: Tensor
) -> None:
    """Set ``prompt``, ``source`` and ``categories`` of synthetic rows, where present.

    Args:
        out: the batch, changed in place (lists and tensors are copied before changing).
        rows: the synthetic rows of ``out``.
        cond: int64 [N, H, W] their vocabulary-id conditions.
        labels: classification labels of the rows (their prompt names the class), else None.
        lut: int64 [C] vocabulary id per downstream class.
    """
    if isinstance(out.get('source'), list):
        out['source'] = list(out['source'])
        for row in rows:
            out['source'][row] = 'synthetic'
    has_prompt = isinstance(out.get('prompt'), list)
    categories = out.get('categories')
    has_categories = isinstance(categories, Tensor) and categories.shape[-1] == NUM_CLASSES
    if not (has_prompt or has_categories):
        return  # spare the conditions' copy to the CPU
    prompts, present = present_prompts(cond)
    if labels is not None:  # classification: the class's own prompt
        prompts = [prompt_from_ids([int(lut[label])]) for label in labels]
    if has_prompt:
        out['prompt'] = list(out['prompt'])
        for row, prompt in zip(rows, prompts):
            out['prompt'][row] = prompt
    if isinstance(categories, Tensor) and has_categories:
        categories = categories.clone()
        categories[torch.tensor(rows, device=categories.device)] = present.to(categories)
        out['categories'] = categories


__all__ = (
    'BANK',
    'GENERATED',
    'REAL',
    'SyntheticPlan',
    'SyntheticRows',
    'describe_rows',
    'insert_rows',
)
