# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Filling a bank with ``Trainer.predict``: a LightningModule for diffusers exports, the writer."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from torchgeo_earthsynth.atomic import atomic_write_text
from torchgeo_earthsynth.bank.store import SUMMARY, SyntheticBank, default_writer_id
from torchgeo_earthsynth.compat import DETECTION_BOXES, DETECTION_LABELS
from torchgeo_earthsynth.conditions import ConditionEncoding
from torchgeo_earthsynth.models import SD15_ID
from torchgeo_earthsynth.rfilter.protocol import SampleFilter, filter_verdict
from torchgeo_earthsynth.seeding import sample_seeds
from torchgeo_earthsynth.synthesis.parts import SchedulerName
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer
from torchgeo_earthsynth.vocabulary import multi_hot

__all__ = ('BankWriter', 'SynthesizerModule')


class SynthesizerModule(pl.LightningModule):
    """Predict with any diffusers ControlNet export through a ``Synthesizer``.

    Same ``predict_step`` contract as
    :class:`~torchgeo_earthsynth.lightning_modules.EarthSynthControlNet`, for filling a bank
    from our exports or the released EarthSynth weights.

    Args:
        pretrained: our export folder, a ControlNet folder or a hub id.
        base: Stable Diffusion base for a bare ControlNet.
        subfolder: the ControlNet's subfolder.
        scheduler: sampler.
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance scale.
        negative_prompt: prompt guided away from.
        condition_encoding: mask encoding (default: the export's, else ``grey``).
        seed: run seed of the samples of batches without a ``seed`` (see
            :func:`~torchgeo_earthsynth.seeding.sample_seeds`).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        pretrained: str,
        base: str = SD15_ID,
        subfolder: str | None = None,
        scheduler: SchedulerName = 'unipc',
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str = '',
        condition_encoding: ConditionEncoding | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.seed = seed
        kwargs: dict[str, Any] = (
            {'condition_encoding': condition_encoding} if (condition_encoding is not None) else {}
        )
        self.synthesizer = Synthesizer.from_pretrained(
            pretrained,
            base,
            subfolder,
            scheduler=scheduler,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            **kwargs,
        )
        pipe = self.synthesizer.pipeline
        # Registered as submodules so the Trainer moves them to its device.
        self.unet, self.controlnet, self.vae = pipe.unet, pipe.controlnet, pipe.vae
        self.text_encoder = pipe.text_encoder

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Generate an image per (mask, prompt, seed); the mask stays the label.

        Batches without ``seed`` get seeds distinct across batches (a short last one too)
        and ranks from :func:`~torchgeo_earthsynth.seeding.sample_seeds`.
        """
        masks = batch['mask']
        seeds = batch.get('seed')
        if seeds is None:
            seeds = sample_seeds(self.seed, batch_idx, len(masks))
        self.synthesizer.batch_size = len(masks)
        images = self.synthesizer.generate(masks, list(batch['prompt']), seeds)
        return {
            **batch,
            'image': images,
            'mask': masks.long(),
            'prompt': list(batch['prompt']),
            'categories': torch.stack([multi_hot(m) for m in masks]),
            'source': ['synthetic'] * len(masks),
            'seed': torch.as_tensor(seeds),
        }


class BankWriter(BasePredictionWriter):
    """Write ``Trainer.predict`` outputs into a ``SyntheticBank``, one part per rank.

    Each rank appends its samples to ``parts/rank<r>-<host>-<pid>.jsonl`` as its batches end;
    Lightning's distributed predict sampler gives every dataset index to one rank only. The
    sample key is ``key`` of the batch (see
    :class:`~torchgeo_earthsynth.datamodules.MaskPromptDataset`), else the dataset index. An
    optional filter drops samples (non-finite images are always dropped). Samples generated
    from boxes (a batch with ``bbox_xyxy`` and ``label``, e.g. of
    :class:`~torchgeo_earthsynth.datamodules.BoxLayoutDataModule`) keep them as their exact
    label in the bank. At the end rank 0
    consolidates the bank and writes ``<split>/summary.json`` (also kept in
    :attr:`summary`).

    Args:
        root: bank root.
        split: bank split.
        rfilter: :class:`~torchgeo_earthsynth.rfilter.SampleFilter` applied to every
            prediction batch (e.g. an ``RFilter``).
        categories: also write single-category samples.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        root: str = 'outputs/bank',
        split: Literal['train', 'val'] = 'train',
        rfilter: SampleFilter | None = None,
        categories: bool = False,
    ) -> None:
        super().__init__('batch')
        self.root, self.split, self.rfilter, self.categories = root, split, rfilter, categories
        self.bank = SyntheticBank(root, split, categories=categories)
        self.stats: dict[str, Any] = {}
        #: The last run's summary (global rank 0 only).
        self.summary: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Open the bank with this rank's writer id and reset the counts."""
        super().setup(trainer, pl_module, stage)
        writer = f'rank{trainer.global_rank}-{default_writer_id()}'
        self.bank = SyntheticBank(self.root, self.split, writer, self.categories)
        self.summary = None
        self.stats = {
            'writer': self.bank.writer_id,
            'predicted': 0,
            'written': 0,
            'dropped': 0,
            'dropped_by': Counter(),
        }

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Filter the batch's samples and add the kept ones to this rank's part."""
        images = prediction['image']
        size = len(images)
        keys = prediction.get('key', batch.get('key') if isinstance(batch, dict) else None)
        if keys is None:
            if batch_indices is None:
                raise ValueError('BankWriter needs a "key" in the batch or batch indices')
            keys = list(batch_indices)
        keys = keys.tolist() if isinstance(keys, Tensor) else list(keys)
        keep = torch.ones(size, dtype=torch.bool)
        reasons = [''] * size
        if self.rfilter is not None:
            keep, reasons = filter_verdict(self.rfilter(prediction), size)
        finite = torch.isfinite(images.detach().flatten(1)).all(dim=1).cpu()
        seeds = prediction.get('seed')
        samples = []
        for i in range(size):
            if not keep[i] or not finite[i]:
                why = reasons[i] if not keep[i] else 'non-finite image'
                for part in why.split('; ') if why else ['unspecified']:
                    rule = re.match(r'[A-Za-z_-]+', part)
                    self.stats['dropped_by'][rule.group(0) if rule else part] += 1
                self.stats['dropped'] += 1
                continue
            sample = {
                'image': images[i],
                'mask': prediction['mask'][i],
                'key': keys[i],
                'seed': None if seeds is None else int(seeds[i]),
            }
            if DETECTION_BOXES in prediction:  # generated from boxes: they are its label
                sample[DETECTION_BOXES] = prediction[DETECTION_BOXES][i]
                sample[DETECTION_LABELS] = prediction[DETECTION_LABELS][i]
            samples.append(sample)
        self.stats['predicted'] += size
        self.stats['written'] += self.bank.add(samples)
        self.bank.release(keys)  # stored (or dropped): claims of MaskPromptDataModule end

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Gather every rank's counts; rank 0 consolidates and writes the summary.

        In ``teardown`` rather than ``on_predict_end``, which a rank with no batch skips.
        """
        if stage != 'predict' or not self.stats:
            return
        stats = self.stats | {'dropped_by': dict(self.stats['dropped_by'])}
        gathered = [stats]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [{}] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, stats)
        if not trainer.is_global_zero:
            return
        dropped_by: Counter[str] = Counter()
        for rank in gathered:
            dropped_by.update(rank['dropped_by'])
        datamodule = getattr(trainer, 'datamodule', None)
        dataset = getattr(datamodule, 'predict_dataset', None)
        summary = {
            'bank': str(self.bank.split_dir),
            'predicted': sum(r['predicted'] for r in gathered),
            'written': sum(r['written'] for r in gathered),
            'dropped': sum(r['dropped'] for r in gathered),
            'dropped_by': dict(dropped_by),
            'skipped_done': getattr(dataset, 'skipped', None),
            'bank_size': self.bank.consolidate(),
            'ranks': gathered,
        }
        atomic_write_text(self.bank.split_dir / SUMMARY, json.dumps(summary, indent=2) + '\n')
        self.summary = summary
