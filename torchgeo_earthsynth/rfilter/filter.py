# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""R-Filter: score generated samples by named rules, keep the good ones, say why others went."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor, nn

from torchgeo_earthsynth.metrics import ClipScorer, Tokenizer, per_sample_miou
from torchgeo_earthsynth.rfilter.models import TaskKind, _clip_scorer, load_task
from torchgeo_earthsynth.rfilter.results import RFilterResult, RFilterSummary, select
from torchgeo_earthsynth.rfilter.rules import NoveltyFeatures, _clean, _RuleScoring, _Verdict

logger = logging.getLogger(__name__)


#: Rule names, in the order their reasons are reported.
RULES: Final[tuple[str, ...]] = (
    'alignment',
    'layout',
    'objects',
    'sanity',
    'novelty',
    'informativeness',
)


class RFilter(_RuleScoring):
    """Score generated samples by named rules and keep those that pass every enabled rule.

    Rules (each has an on/off switch and thresholds; all are computed for the whole batch):

    * ``alignment``: CLIP score of the image against its prompt, keep if >= threshold.
    * ``layout``: mIoU of a segmenter's prediction against the condition mask, keep if >=
      threshold.
    * ``objects`` (detection, off by default): each box's object is there: a classifier's
      probability of the box's class on the box's crop (``object_context`` of its size
      around it, resampled to ``object_size``), keep if every box scores >=
      ``object_threshold`` (boxes of classes the classifier does not know are not judged).
      Needs the batch's boxes: ``bbox_xyxy`` (per image [N, 4] pixels) and ``label`` (per
      image [N] vocabulary ids), as box layouts give them.
    * ``sanity``: drop images with NaN/inf, flat images (every channel's spatial std below
      ``flat_threshold``, so a uniform coloured image is flat) and
      saturated images (share of values at 0 or 255 above ``saturation_threshold``).
    * ``novelty``: drop near-duplicates (cosine similarity above ``novelty_threshold``) of the
      sample's real source image (batch key ``reference_key``, when present) or of samples
      kept earlier (a bounded memory, earlier samples of the same batch included, so one batch
      gives the same answer as its samples one by one).
    * ``informativeness`` (off by default): keep if a downstream model's max-softmax confidence
      (mean over pixels for segmentation) lies in ``[confidence_low, confidence_high]``.

    A rule whose model is missing is switched off with a logged warning and a note in
    :meth:`summary`. Models are kept in eval mode and run under ``torch.inference_mode()``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        alignment: bool = True,
        clip_model: str | nn.Module | ClipScorer | None = 'ViT-B-32',
        clip_pretrained: str | None = 'openai',
        clip_checkpoint: str | Path | None = None,
        clip_tokenizer: Tokenizer | None = None,
        alignment_threshold: float = 20.0,
        text_cache_size: int = 4096,
        layout: bool = True,
        segmenter: nn.Module | str | Path | None = None,
        segmenter_label_map: Sequence[int] | None = None,
        layout_threshold: float = 0.3,
        layout_ignore_background: bool = True,
        sanity: bool = True,
        flat_threshold: float = 2.0,
        saturation_threshold: float = 0.5,
        novelty: bool = True,
        novelty_threshold: float = 0.95,
        novelty_features: NoveltyFeatures = 'pixels',
        novelty_size: int = 16,
        novelty_memory: int = 4096,
        reference_key: str = 'reference',
        objects: bool = False,
        object_classifier: nn.Module | str | Path | None = None,
        object_label_map: Sequence[int] | None = None,
        object_threshold: float = 0.5,
        object_size: int = 64,
        object_context: float = 0.1,
        informativeness: bool = False,
        informer: nn.Module | str | Path | None = None,
        informer_task: TaskKind = 'segmentation',
        confidence_low: float = 0.3,
        confidence_high: float = 0.95,
        normalize_mean: Sequence[float] = (0.0, 0.0, 0.0),
        normalize_std: Sequence[float] = (255.0, 255.0, 255.0),
        cpu_micro_batch: int | None = 8,
        map_location: str = 'cpu',
        weights_only: bool = True,
    ) -> None:
        """Initialise a new RFilter.

        Args:
            alignment: switch for the CLIP alignment rule.
            clip_model: open_clip architecture name, a built open_clip model, a
                :class:`~torchgeo_earthsynth.metrics.ClipScorer` (the same scoring as the
                CLIP-score metric), or None (rule off).
            clip_pretrained: open_clip pretrained tag for a named model.
            clip_checkpoint: local checkpoint file for a named model (overrides the tag).
            clip_tokenizer: tokenizer for the CLIP model; default open_clip's for the name
                (the standard CLIP BPE for a built model).
            alignment_threshold: minimum CLIP score (0..100).
            text_cache_size: how many prompts' CLIP text embeddings to keep (cleared when full).
            layout: switch for the layout-fidelity rule.
            segmenter: a module mapping normalised images [B, 3, H, W] to logits
                [B, C, h, w], a TorchGeo ``SemanticSegmentationTask`` checkpoint path, or None
                (rule off).
            segmenter_label_map: vocabulary id of each segmenter class (e.g.
                ``encodings.label_map(LoveDA.classes, 'LoveDA').tolist()``); None when the
                segmenter predicts vocabulary ids.
            layout_threshold: minimum mIoU (0..1).
            layout_ignore_background: ignore pixels whose condition id is background and leave
                background out of the mean.
            sanity: switch for the sanity rule.
            flat_threshold: minimum spatial standard deviation of the most varied channel
                (0..255 scale): below it every channel is flat.
            saturation_threshold: maximum share of values at 0 or 255.
            novelty: switch for the novelty rule.
            novelty_threshold: maximum cosine similarity to the reference or a kept sample.
            novelty_features: ``pixels`` (mean-centred image pooled to ``novelty_size``) or
                ``clip`` (CLIP image embeddings; needs the CLIP model).
            novelty_size: side of the pooled image for ``pixels`` features.
            novelty_memory: how many kept samples' features to remember (0: none).
            reference_key: batch key of the real source images, if any.
            objects: switch for the per-box rule (detection).
            object_classifier: a module mapping normalised crops [N, 3, s, s] to logits
                [N, K], a TorchGeo ``ClassificationTask`` checkpoint path, or None (rule off).
            object_label_map: vocabulary id of each classifier class; None when the
                classifier predicts vocabulary ids.
            object_threshold: minimum probability of a box's class (0..1).
            object_size: side of the crops given to the classifier.
            object_context: share of a box's size added around it in its crop.
            informativeness: switch for the confidence-band rule.
            informer: downstream model (module, or TorchGeo task checkpoint path) mapping
                normalised images to logits [B, C] or [B, C, H, W].
            informer_task: which TorchGeo task class to load a checkpoint path with.
            confidence_low: drop samples whose confidence is below this (too hard).
            confidence_high: drop samples whose confidence is above this (too easy).
            normalize_mean: per-channel mean subtracted before the segmenter and informer.
            normalize_std: per-channel std divided by before them (TorchGeo datamodules
                default to dividing by 255).
            cpu_micro_batch: on the CPU, run the segmenter and the informer on chunks of this
                many images, so that their activations stay in the CPU cache (a small conv
                segmenter at 64 px runs about 3x faster in chunks of 8 than on a batch of 32;
                ``benchmarks/profiles.py rfilter``); None runs whole batches. Off the CPU whole
                batches always run.
            map_location: device for models loaded from checkpoints.
            weights_only: ``torch.load`` mode for task checkpoints.

        Raises:
            ValueError: for thresholds out of range or inconsistent options.
            RuntimeError: if a named open_clip model cannot be loaded.
        """
        super().__init__()
        self._check_args(
            alignment_threshold=alignment_threshold,
            layout_threshold=layout_threshold,
            flat_threshold=flat_threshold,
            saturation_threshold=saturation_threshold,
            novelty_threshold=novelty_threshold,
            novelty_size=novelty_size,
            novelty_memory=novelty_memory,
            text_cache_size=text_cache_size,
            confidence_low=confidence_low,
            confidence_high=confidence_high,
            object_threshold=object_threshold,
            object_size=object_size,
            object_context=object_context,
            normalize_mean=normalize_mean,
            normalize_std=normalize_std,
            cpu_micro_batch=cpu_micro_batch,
        )
        self.cpu_micro_batch = cpu_micro_batch
        self.alignment_threshold = float(alignment_threshold)
        self.layout_threshold = float(layout_threshold)
        self.layout_ignore_background = layout_ignore_background
        self.flat_threshold = float(flat_threshold)
        self.saturation_threshold = float(saturation_threshold)
        self.novelty_threshold = float(novelty_threshold)
        self.novelty_features = novelty_features
        self.novelty_size = novelty_size
        self.novelty_memory = novelty_memory
        self.reference_key = reference_key
        self.confidence_low = float(confidence_low)
        self.confidence_high = float(confidence_high)
        self.register_buffer(
            'normalize_mean', torch.tensor(normalize_mean, dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            'normalize_std', torch.tensor(normalize_std, dtype=torch.float32), persistent=False
        )

        self.enabled: dict[str, bool] = {
            'alignment': alignment,
            'layout': layout,
            'objects': objects,
            'sanity': sanity,
            'novelty': novelty,
            'informativeness': informativeness,
        }
        self.notes: dict[str, str] = {}

        self.text_cache_size = text_cache_size
        self.scorer: ClipScorer | None = None
        needs_clip = alignment or (novelty and novelty_features == 'clip')
        if needs_clip and clip_model is not None:
            self.scorer = _clip_scorer(
                clip_model, clip_pretrained, clip_checkpoint, clip_tokenizer, map_location
            )
        # A submodule, so that .to() and .eval() reach it; the scorer reads its device.
        model = None if self.scorer is None else self.scorer.model
        self.clip: nn.Module | None = model if isinstance(model, nn.Module) else None
        if self.scorer is None:
            self._switch_off('alignment', 'no CLIP model given (clip_model=None)')
            if novelty_features == 'clip':
                self._switch_off('novelty', "novelty_features='clip' needs a CLIP model")

        self.segmenter: nn.Module | None = None
        if layout and segmenter is not None:
            self.segmenter = (
                load_task(segmenter, 'segmentation', map_location, weights_only)
                if isinstance(segmenter, str | Path)
                else segmenter
            )
        if self.segmenter is None:
            self._switch_off('layout', 'no segmenter given')
        self.label_map: Tensor | None = None
        if segmenter_label_map is not None:
            self.label_map = torch.as_tensor(list(segmenter_label_map), dtype=torch.long)
            if self.label_map.ndim != 1 or (self.label_map < 0).any():
                raise ValueError('segmenter_label_map must be a flat list of vocabulary ids >= 0')

        self.informer: nn.Module | None = None
        if informativeness and informer is not None:
            self.informer = (
                load_task(informer, informer_task, map_location, weights_only)
                if isinstance(informer, str | Path)
                else informer
            )
        if self.informer is None:
            self._switch_off('informativeness', 'no informer model given')

        self.object_threshold = float(object_threshold)
        self.object_size = object_size
        self.object_context = float(object_context)
        self.object_classifier: nn.Module | None = None
        if objects and object_classifier is not None:
            self.object_classifier = (
                load_task(object_classifier, 'classification', map_location, weights_only)
                if isinstance(object_classifier, str | Path)
                else object_classifier
            )
        if self.object_classifier is None:
            self._switch_off('objects', 'no object classifier given')
        self.object_label_map: Tensor | None = None
        if object_label_map is not None:
            self.object_label_map = torch.as_tensor(list(object_label_map), dtype=torch.long)
            if self.object_label_map.ndim != 1 or (self.object_label_map < 0).any():
                raise ValueError('object_label_map must be a flat list of vocabulary ids >= 0')

        self._memory: Tensor | None = None
        self.counts: dict[str, dict[str, int]] = {}
        self.reset()
        self.eval()

    @staticmethod
    def _check_args(**args: Any) -> None:
        """Raise a ValueError naming the first argument out of its range."""
        checks: list[tuple[str, bool, str]] = [
            ('alignment_threshold', 0 <= args['alignment_threshold'] <= 100, 'in [0, 100]'),
            ('layout_threshold', 0 <= args['layout_threshold'] <= 1, 'in [0, 1]'),
            ('flat_threshold', args['flat_threshold'] >= 0, '>= 0'),
            ('saturation_threshold', 0 <= args['saturation_threshold'] <= 1, 'in [0, 1]'),
            ('novelty_threshold', -1 <= args['novelty_threshold'] <= 1, 'in [-1, 1]'),
            ('novelty_size', args['novelty_size'] >= 1, '>= 1'),
            ('novelty_memory', args['novelty_memory'] >= 0, '>= 0'),
            ('text_cache_size', args['text_cache_size'] >= 0, '>= 0'),
            ('confidence_low', 0 <= args['confidence_low'] <= 1, 'in [0, 1]'),
            ('object_threshold', 0 <= args['object_threshold'] <= 1, 'in [0, 1]'),
            ('object_size', args['object_size'] >= 1, '>= 1'),
            ('object_context', args['object_context'] >= 0, '>= 0'),
            (
                'confidence_high',
                args['confidence_low'] <= args['confidence_high'] <= 1,
                'in [confidence_low, 1]',
            ),
            ('normalize_mean', len(args['normalize_mean']) in (1, 3), 'of length 1 or 3'),
            (
                'normalize_std',
                len(args['normalize_std']) in (1, 3) and all(s > 0 for s in args['normalize_std']),
                'of length 1 or 3, all > 0',
            ),
            (
                'cpu_micro_batch',
                args['cpu_micro_batch'] is None or args['cpu_micro_batch'] >= 1,
                'None or >= 1',
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f'{name} must be {expected}, got {args[name]!r}')

    def _switch_off(self, rule: str, why: str) -> None:
        """Turn a requested rule off, say so in the log and in the summary."""
        if self.enabled[rule]:
            logger.warning('R-Filter rule %r is off: %s', rule, why)
            self.notes[rule] = f'off: {why}'
            self.enabled[rule] = False

    def train(self, mode: bool = True) -> RFilter:
        """Keep every scoring model in eval mode (``mode`` is ignored)."""
        return super().train(False)

    def reset(self) -> None:
        """Forget the novelty memory and zero the running counts."""
        self._memory = None
        self.counts = {
            name: {'seen': 0, 'kept': 0, 'dropped': 0}
            for name in (*(r for r in RULES if self.enabled[r]), 'total')
        }

    def forward(self, batch: Mapping[str, Any], update: bool = True) -> RFilterResult:
        """Score a collated batch and decide which samples to keep.

        Args:
            batch: ``image`` float [B, 3, H, W] 0..255; ``prompt`` (B strings) for alignment;
                ``mask`` int [B, H, W] vocabulary ids for layout; ``bbox_xyxy`` and ``label``
                lists for objects; optionally the real source
                images [B, 3, H', W'] under ``reference_key`` for novelty.
            update: add the kept samples to the novelty memory and the batch to the counts.

        Returns:
            The decision, scores and reasons; ``keep`` and scores are on the CPU.

        Raises:
            ValueError: if a key that an enabled rule needs is missing or malformed.
        """
        images = batch.get('image')
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"batch['image'] must be a tensor [B, 3, H, W] in 0..255, got {got}")
        b = images.shape[0]
        clean = _clean(images)  # once for every rule; sanity still sees the raw values
        verdicts: dict[str, _Verdict] = {}
        clip_features = None
        if b and self.enabled['alignment']:
            verdicts['alignment'], clip_features = self._alignment(batch, clean)
        if b and self.enabled['layout']:
            verdicts['layout'] = self._layout(batch, clean)
        if b and self.enabled['objects']:
            verdicts['objects'] = self._objects(batch, clean)
        if b and self.enabled['sanity']:
            verdicts['sanity'] = self._sanity(images, clean)
        if b and self.enabled['informativeness']:
            verdicts['informativeness'] = self._informativeness(clean)
        keep = torch.ones(b, dtype=torch.bool)
        for verdict in verdicts.values():
            keep &= verdict.ok
        # Novelty last: it compares with what every other rule keeps.
        features = None
        if b and self.enabled['novelty']:
            features = self._novelty_features(clean, clip_features)
            verdicts['novelty'] = self._novelty(batch, features, keep)
            keep &= verdicts['novelty'].ok

        if update:
            if features is not None and self.novelty_memory and keep.any():
                new = features[keep.to(features.device)]
                old = self._memory.to(new.device) if self._memory is not None else new[:0]
                self._memory = torch.cat([old, new])[-self.novelty_memory :]
            for name, ok in [*((n, v.ok) for n, v in verdicts.items()), ('total', keep)]:
                kept = int(ok.sum())
                self.counts[name]['seen'] += b
                self.counts[name]['kept'] += kept
                self.counts[name]['dropped'] += b - kept

        scores: dict[str, Tensor] = {}
        reasons = []
        for rule in RULES:
            if rule in verdicts:
                scores.update(verdicts[rule].scores)
        for i in range(b):
            why = (verdicts[r].why.get(i) for r in RULES if r in verdicts)
            reasons.append('; '.join(w for w in why if w))
        return RFilterResult(keep, scores, reasons, copy.deepcopy(self.counts))

    def filter(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], RFilterResult]:
        """Score a batch and return only the kept samples.

        Args:
            batch: as for :meth:`forward`.

        Returns:
            The kept sub-batch (see :func:`select`) and the full result.
        """
        result = self(batch)
        return select(batch, result.keep), result

    def criteria(self) -> dict[str, str]:
        """What each rule checks, with its thresholds, as text."""
        return {
            'alignment': f'CLIP score >= {self.alignment_threshold:g}',
            'layout': f'mIoU >= {self.layout_threshold:g}',
            'objects': f'every box: P(class) >= {self.object_threshold:g}',
            'sanity': (
                f'finite, std >= {self.flat_threshold:g}, '
                f'saturated share <= {self.saturation_threshold:g}'
            ),
            'novelty': f'cosine to reference/kept <= {self.novelty_threshold:g}',
            'informativeness': f'{self.confidence_low:g} <= confidence <= {self.confidence_high:g}',
        }

    def summary(self) -> RFilterSummary:
        """Seen/kept/dropped so far per rule (a sample can be dropped by several rules).

        Returns:
            The table; ``str()`` it, or use ``to_csv``/``to_markdown``.
        """
        criteria = self.criteria()
        rows = []
        for rule in (*RULES, 'total'):
            count = self.counts.get(rule, {'seen': 0, 'kept': 0, 'dropped': 0})
            rows.append(
                {
                    'rule': rule,
                    'enabled': rule == 'total' or self.enabled[rule],
                    'criterion': criteria.get(rule, 'all enabled rules'),
                    **count,
                    'note': self.notes.get(rule, ''),
                }
            )
        return RFilterSummary(rows)

    def extra_repr(self) -> str:
        """Enabled rules, for ``print(rfilter)``."""
        return 'rules=' + ', '.join(r for r in RULES if self.enabled[r])


__all__ = (
    'RULES',
    'RFilter',
    'RFilterResult',
    'RFilterSummary',
    'load_task',
    'per_sample_miou',
    'select',
)
