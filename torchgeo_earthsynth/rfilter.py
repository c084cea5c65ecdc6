# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""R-Filter: score generated samples by named rules, keep the good ones, say why others went."""

from __future__ import annotations

import copy
import csv
import io
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .metrics import ClipModel, ClipScorer, Tokenizer, per_sample_miou
from .vocabulary import BACKGROUND, NUM_CLASSES

logger = logging.getLogger(__name__)

NoveltyFeatures = Literal['pixels', 'clip']
TaskKind = Literal['segmentation', 'classification']

#: Rule names, in the order their reasons are reported.
RULES: Final[tuple[str, ...]] = ('alignment', 'layout', 'sanity', 'novelty', 'informativeness')

#: The standard CLIP BPE tokenizer (bundled with open_clip, so it works offline).
DEFAULT_TOKENIZER: Final[str] = 'ViT-B-32'


def _device(module: nn.Module, default: torch.device) -> torch.device:
    """The device of a module's first parameter or buffer, else ``default``."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return default if tensor is None else tensor.device


def _clean(images: Tensor) -> Tensor:
    """Float32 copy with NaN/inf replaced and values clipped to 0..255 (sanity reports them)."""
    x = images.float()
    if not torch.isfinite(x.sum()):  # a cheap test first: nan_to_num is a slow pass on CPU
        x = x.nan_to_num(nan=0.0, posinf=255.0, neginf=0.0)
    return x.clamp(0.0, 255.0)


def _clip_scorer(
    model: str | nn.Module | ClipScorer,
    pretrained: str | None,
    checkpoint: str | Path | None,
    tokenizer: Tokenizer | None,
    device: str,
) -> ClipScorer:
    """The alignment rule's CLIP scorer from a name (tag or checkpoint), a model or a scorer."""
    if isinstance(model, ClipScorer):
        return model
    if not isinstance(model, str):
        import open_clip

        tokenizer = tokenizer or open_clip.get_tokenizer(DEFAULT_TOKENIZER)
        return ClipScorer(cast(ClipModel, model), tokenizer)
    source = pretrained
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ValueError(f'clip_checkpoint {str(checkpoint)!r} is not a file')
        source = str(checkpoint)
    try:
        scorer = ClipScorer.from_pretrained(model, source, device=device)
    except (OSError, RuntimeError, ValueError) as err:
        raise RuntimeError(
            f'could not load open_clip model {model!r} with pretrained={source!r} ({err}). '
            'Offline, download the weights once elsewhere and pass clip_checkpoint=<file>, or '
            'pass a built model as clip_model, or set alignment=False.'
        ) from err
    if tokenizer is not None:
        scorer.tokenizer = tokenizer
    return scorer


def load_task(
    checkpoint: str | Path,
    kind: TaskKind = 'segmentation',
    map_location: str | torch.device = 'cpu',
    weights_only: bool = True,
) -> nn.Module:
    """Load a TorchGeo task (``SemanticSegmentationTask`` or ``ClassificationTask``).

    Args:
        checkpoint: a Lightning checkpoint of the task.
        kind: which task class saved it.
        map_location: device to load the weights on.
        weights_only: passed to ``torch.load``; TorchGeo checkpoints made by a Trainer load with
            True. Set False only for a trusted checkpoint whose hyperparameters hold objects.

    Returns:
        The task in eval mode; calling it maps a normalised batch to logits.

    Raises:
        ValueError: if ``checkpoint`` is not a file.
    """
    from torchgeo.trainers import ClassificationTask, SemanticSegmentationTask

    if not Path(checkpoint).is_file():
        raise ValueError(f'{kind} checkpoint {str(checkpoint)!r} is not a file')
    cls: Any = SemanticSegmentationTask if kind == 'segmentation' else ClassificationTask
    task: nn.Module = cls.load_from_checkpoint(
        checkpoint, map_location=map_location, weights_only=weights_only
    )
    return task.eval()


def _logits(output: Any) -> Tensor:
    """Logits from a model output: a tensor, or a torchvision-style ``{'out': ...}`` dict."""
    if isinstance(output, Mapping):
        output = output['out']
    if not isinstance(output, Tensor):
        raise ValueError(f'model returned {type(output).__name__}, expected a logits tensor')
    return output


def select(batch: Mapping[str, Any], keep: Tensor) -> dict[str, Any]:
    """The samples of a collated batch where ``keep`` is True.

    Tensors whose first dimension is the batch size are indexed, lists/tuples of that length
    are filtered, everything else is kept as is.

    Args:
        batch: a default-collated batch dict.
        keep: bool [B].

    Returns:
        A new batch dict with ``keep.sum()`` samples.
    """
    b = keep.numel()
    flags = keep.cpu().tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == b:
            out[key] = value[keep.to(value.device)]
        elif isinstance(value, list | tuple) and len(value) == b:
            out[key] = type(value)(v for v, k in zip(value, flags, strict=True) if k)
        else:
            out[key] = value
    return out


def _failed(ok: Tensor) -> list[int]:
    """Indices where a bool verdict is False."""
    return (~ok).nonzero().flatten().tolist()


@dataclass
class _Verdict:
    """One rule's outcome for a batch: pass flags [B], scores, and a reason per failed index."""

    ok: Tensor
    scores: dict[str, Tensor]
    why: dict[int, str]


@dataclass
class RFilterResult:
    """What :class:`RFilter` decided for one batch.

    Attributes:
        keep: bool [B], True for the samples every enabled rule passed.
        scores: rule -> float32 [B] (CPU). ``alignment`` CLIP score, ``layout`` mIoU (NaN when
            the mask has nothing to score), ``sanity`` 1/0 plus ``sanity_finite``,
            ``sanity_std`` and ``sanity_saturation``, ``novelty`` the highest cosine similarity
            to the reference or a kept sample (-1 with nothing to compare), ``informativeness``
            the model's confidence. Only enabled rules have scores.
        reasons: per sample, ``''`` when kept, else ``'; '``-joined failures.
        counts: running ``{rule: {'seen', 'kept', 'dropped'}}`` after this batch, plus
            ``'total'``.
    """

    keep: Tensor
    scores: dict[str, Tensor]
    reasons: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def num_kept(self) -> int:
        """How many samples were kept."""
        return int(self.keep.sum())


@dataclass
class RFilterSummary:
    """Seen/kept/dropped per rule, as rows of dicts; ``str()`` gives a Markdown table."""

    rows: list[dict[str, Any]]

    #: Column order of the table.
    columns: tuple[str, ...] = ('rule', 'enabled', 'criterion', 'seen', 'kept', 'dropped', 'note')

    def to_csv(self, path: str | Path | None = None) -> str:
        """The table as CSV text, also written to ``path`` when given.

        Args:
            path: file to write, optional.

        Returns:
            The CSV text.
        """
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.columns), lineterminator='\n')
        writer.writeheader()
        writer.writerows(self.rows)
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_markdown(self) -> str:
        """The table in GitHub Markdown."""
        lines = ['| ' + ' | '.join(self.columns) + ' |', '|' + '---|' * len(self.columns)]
        for row in self.rows:
            lines.append('| ' + ' | '.join(str(row[c]) for c in self.columns) + ' |')
        return '\n'.join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


class RFilter(nn.Module):
    """Score generated samples by named rules and keep those that pass every enabled rule.

    Rules (each has an on/off switch and thresholds; all are computed for the whole batch):

    * ``alignment``: CLIP score of the image against its prompt, keep if >= threshold.
    * ``layout``: mIoU of a segmenter's prediction against the condition mask, keep if >=
      threshold.
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

    normalize_mean: Tensor
    normalize_std: Tensor

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
                ``vocabulary.label_map(LoveDA.classes, 'LoveDA').tolist()``); None when the
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

    def _run_model(
        self, model: nn.Module, clean: Tensor, reduce: Callable[[Tensor, int], Tensor]
    ) -> Tensor:
        """``reduce(logits, size)`` of a segmenter/informer on normalised images.

        On the CPU the model runs in micro-batches and each one's logits are reduced at once,
        so the whole batch's logits never exist together.
        """
        device = _device(model, clean.device)
        mean = self.normalize_mean.to(device).view(1, -1, 1, 1)
        std = self.normalize_std.to(device).view(1, -1, 1, 1)
        x = (clean.to(device) - mean) / std
        chunk = self.cpu_micro_batch
        if device.type != 'cpu' or chunk is None or x.shape[0] <= chunk:
            return reduce(_logits(model(x)), x.shape[0])
        return torch.cat(
            [reduce(_logits(model(part)), part.shape[0]) for part in torch.split(x, chunk)]
        )

    def _alignment(self, batch: Mapping[str, Any], images: Tensor) -> tuple[_Verdict, Tensor]:
        """Alignment verdict, and the CLIP image features for reuse by novelty."""
        assert self.scorer is not None
        b = images.shape[0]
        prompts = batch.get('prompt')
        if isinstance(prompts, str) and b == 1:
            prompts = [prompts]
        if not isinstance(prompts, Sequence) or len(prompts) != b:
            raise ValueError(
                f"batch['prompt'] must hold {b} prompts for the alignment rule, got {prompts!r}"
            )
        features = self.scorer.encode_images(images)
        if self.scorer.num_cached_prompts > self.text_cache_size:
            self.scorer.clear_cache()
        text = self.scorer.encode_prompts(list(prompts)).to(features.device)
        score = ClipScorer.score_features(features, text).cpu()
        ok = score >= self.alignment_threshold
        why = {i: f'alignment {score[i]:.1f} < {self.alignment_threshold:.1f}' for i in _failed(ok)}
        return _Verdict(ok, {'alignment': score}, why), features

    @torch.inference_mode()
    def _layout(self, batch: Mapping[str, Any], images: Tensor) -> _Verdict:
        assert self.segmenter is not None
        b = images.shape[0]
        mask = batch.get('mask')
        if isinstance(mask, Tensor) and mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if not isinstance(mask, Tensor) or mask.ndim != 3 or mask.shape[0] != b:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"batch['mask'] must be an int tensor [B, H, W] for the layout rule, got {shape}"
            )

        def predict(logits: Tensor, size: int) -> Tensor:
            if logits.ndim != 4 or logits.shape[0] != size:
                raise ValueError(
                    f'segmenter must return logits [B, C, H, W], got {tuple(logits.shape)}'
                )
            if logits.shape[-2:] != mask.shape[-2:]:
                logits = F.interpolate(logits.float(), size=mask.shape[-2:], mode='bilinear')
            pred = logits.max(1).indices  # about 2x faster than argmax(1) over channels on CPU
            if self.label_map is None:
                return pred
            if logits.shape[1] > self.label_map.numel():
                raise ValueError(
                    f'segmenter has {logits.shape[1]} classes but segmenter_label_map has only '
                    f'{self.label_map.numel()} entries'
                )
            return self.label_map.to(pred.device)[pred]

        pred = self._run_model(self.segmenter, images, predict)
        ignore = BACKGROUND if self.layout_ignore_background else None
        score = per_sample_miou(pred, mask.to(pred.device), NUM_CLASSES, ignore).cpu()
        ok = (score >= self.layout_threshold) | score.isnan()  # NaN: nothing labelled to check
        why = {i: f'layout {score[i]:.2f} < {self.layout_threshold:.2f}' for i in _failed(ok)}
        return _Verdict(ok, {'layout': score}, why)

    def _sanity(self, images: Tensor, clean_images: Tensor) -> _Verdict:
        x = images.flatten(1)
        finite = torch.isfinite(x.sum(1))  # fast; a sum can overflow, so recheck those exactly
        if not finite.all():
            finite[~finite] = torch.isfinite(x[~finite]).all(1)
        finite = finite.cpu()
        clean = clean_images.flatten(1)
        # Each channel's spatial spread, the largest one scored: a uniform coloured image is
        # flat though its channels differ. A centred norm is faster than Tensor.std on CPU.
        channels = clean_images.flatten(2)
        centred = channels - channels.mean(2, keepdim=True)
        spread = torch.linalg.vector_norm(centred, dim=2) / channels.shape[2] ** 0.5
        std = spread.amax(1).cpu()
        # |x - 127.5| >= 127.5 means x at 0 or 255 (x is clipped); 4x faster than two compares.
        saturation = clean.sub(127.5).abs_().ge_(127.5).mean(1).cpu()
        flat = finite & (std < self.flat_threshold)
        saturated = finite & (saturation > self.saturation_threshold)
        ok = finite & ~flat & ~saturated
        why = {}
        for i in _failed(ok):
            what = [] if finite[i] else ['non-finite']
            if flat[i]:
                what.append(f'flat (std {std[i]:.1f} < {self.flat_threshold:.1f})')
            if saturated[i]:
                what.append(f'saturated ({saturation[i]:.2f} > {self.saturation_threshold:.2f})')
            why[i] = 'sanity: ' + ', '.join(what)
        scores = {
            'sanity': ok.float(),
            'sanity_finite': finite.float(),
            'sanity_std': std,
            'sanity_saturation': saturation,
        }
        return _Verdict(ok, scores, why)

    @torch.inference_mode()
    def _informativeness(self, images: Tensor) -> _Verdict:
        assert self.informer is not None

        def confidence(logits: Tensor, size: int) -> Tensor:
            if logits.ndim < 2 or logits.shape[0] != size:
                raise ValueError(
                    f'informer must return logits [B, C, ...], got {tuple(logits.shape)}'
                )
            top = logits.float().softmax(1).amax(1)
            return top.flatten(1).mean(1) if top.ndim > 1 else top

        score = self._run_model(self.informer, images, confidence).cpu()
        low, high = self.confidence_low, self.confidence_high
        ok = (score >= low) & (score <= high)
        why = {
            i: f'informativeness {score[i]:.2f} < {low:.2f} (too hard)'
            if score[i] < low
            else f'informativeness {score[i]:.2f} > {high:.2f} (too easy)'
            for i in _failed(ok)
        }
        return _Verdict(ok, {'informativeness': score}, why)

    @torch.inference_mode()
    def _novelty_features(self, clean: Tensor, clip_features: Tensor | None = None) -> Tensor:
        if self.novelty_features == 'clip':
            assert self.scorer is not None
            if clip_features is not None:
                return clip_features
            return self.scorer.encode_images(clean)
        x = F.adaptive_avg_pool2d(clean, self.novelty_size).flatten(1)
        # Mean-centred, so cosine similarity is a correlation: brightness alone is no match.
        return F.normalize(x - x.mean(1, keepdim=True), dim=1)

    @torch.inference_mode()
    def _novelty(self, batch: Mapping[str, Any], features: Tensor, keep: Tensor) -> _Verdict:
        """Novelty verdict; ``keep`` (the other rules' verdict) says which samples get kept."""
        b, device, threshold = features.shape[0], features.device, self.novelty_threshold
        ref_sim = torch.full((b,), -1.0, device=device)
        reference = batch.get(self.reference_key)
        if reference is not None:
            if (
                not isinstance(reference, Tensor)
                or reference.ndim != 4
                or tuple(reference.shape[:2]) != (b, 3)
            ):
                got = tuple(reference.shape) if isinstance(reference, Tensor) else reference
                raise ValueError(
                    f'batch[{self.reference_key!r}] must be a tensor [B, 3, H, W] of real images, '
                    f'got {got!r}'
                )
            ref_sim = (features * self._novelty_features(_clean(reference)).to(device)).sum(1)
        seen_sim = torch.full((b,), -1.0, device=device)
        if self._memory is not None and len(self._memory):
            seen_sim = (features @ self._memory.to(device).T).amax(1)
        ref_sim, seen_sim = ref_sim.cpu(), seen_sim.cpu()
        ok = (ref_sim <= threshold) & (seen_sim <= threshold)

        # Earlier samples of this batch count as memory once kept, decided in order, so a batch
        # gives what its samples one by one would. Loop only when two candidates are too close.
        pair = (features @ features.T).cpu()
        earlier = torch.ones(b, b, dtype=torch.bool).tril(-1)
        kept = keep & ok
        if ((pair > threshold) & earlier & kept[:, None] & kept[None, :]).any():
            for j in range(1, b):
                if kept[j] and bool(((pair[j, :j] > threshold) & kept[:j]).any()):
                    kept[j] = ok[j] = False
        seen_sim = torch.maximum(seen_sim, pair.masked_fill(~(earlier & kept), -1.0).amax(1))
        why = {
            i: f'novelty {ref_sim[i]:.2f} > {threshold:.2f} (reference)'
            if ref_sim[i] > threshold
            else f'novelty {seen_sim[i]:.2f} > {threshold:.2f} (kept sample)'
            for i in _failed(ok)
        }
        return _Verdict(ok, {'novelty': torch.maximum(ref_sim, seen_sim)}, why)

    def forward(self, batch: Mapping[str, Any], update: bool = True) -> RFilterResult:
        """Score a collated batch and decide which samples to keep.

        Args:
            batch: ``image`` float [B, 3, H, W] 0..255; ``prompt`` (B strings) for alignment;
                ``mask`` int [B, H, W] vocabulary ids for layout; optionally the real source
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
