# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""R-Filter's rules: each one's verdict for a batch (pass flags, scores, reasons)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchgeo_earthsynth.compat import DETECTION_LABELS
from torchgeo_earthsynth.metrics import ClipScorer, per_sample_miou
from torchgeo_earthsynth.rfilter.models import _device, _logits
from torchgeo_earthsynth.rfilter.objects import object_reason, object_scores, probabilities
from torchgeo_earthsynth.vocabulary import BACKGROUND, NUM_CLASSES

NoveltyFeatures = Literal['pixels', 'clip']


def _clean(images: Tensor) -> Tensor:
    """Float32 copy with NaN/inf replaced and values clipped to 0..255 (sanity reports them)."""
    x = images.float()
    if not torch.isfinite(x.sum()):  # a cheap test first: nan_to_num is a slow pass on CPU
        x = x.nan_to_num(nan=0.0, posinf=255.0, neginf=0.0)
    return x.clamp(0.0, 255.0)


def _failed(ok: Tensor) -> list[int]:
    """Indices where a bool verdict is False."""
    return (~ok).nonzero().flatten().tolist()


@dataclass
class _Verdict:
    """One rule's outcome for a batch: pass flags [B], scores, and a reason per failed index."""

    ok: Tensor
    scores: dict[str, Tensor]
    why: dict[int, str]


class _RuleScoring(nn.Module):
    """Each rule's verdict on a batch.

    :class:`~torchgeo_earthsynth.rfilter.RFilter` holds the settings and models the rules
    read, and combines their verdicts.
    """

    normalize_mean: Tensor
    normalize_std: Tensor
    cpu_micro_batch: int | None
    scorer: ClipScorer | None
    text_cache_size: int
    alignment_threshold: float
    segmenter: nn.Module | None
    label_map: Tensor | None
    layout_threshold: float
    layout_ignore_background: bool
    flat_threshold: float
    saturation_threshold: float
    informer: nn.Module | None
    object_classifier: nn.Module | None
    object_label_map: Tensor | None
    object_threshold: float
    object_size: int
    object_context: float
    confidence_low: float
    confidence_high: float
    novelty_features: NoveltyFeatures
    novelty_size: int
    novelty_threshold: float
    reference_key: str
    _memory: Tensor | None

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

    def calibrate_layout(
        self, real: Mapping[str, Any], quantile: float = 0.1, fraction: float = 1.0
    ) -> float:
        """Set the layout threshold from the layout scores of real image-mask pairs.

        The segmenter scores each real image against its own mask; a generated sample is
        then kept when it scores at least ``fraction`` times the ``quantile`` of those scores:
        when it follows its mask about as well as most real images do. Nothing is counted
        in the summary or added to the novelty memory.

        Args:
            real: real samples, ``image`` [B, 3, H, W] 0..255 and ``mask`` [B, H, W].
            quantile: the quantile of the real scores, in [0, 1].
            fraction: the share of that quantile a generated sample must reach, in (0, 1].

        Returns:
            The new ``layout_threshold``.

        Raises:
            ValueError: if there is no segmenter, an argument is out of range, or no real
                mask holds a class the rule scores.

        .. versionadded:: 0.2
        """
        if self.segmenter is None:
            raise ValueError('calibrate_layout needs the layout rule (a segmenter)')
        if not 0.0 <= quantile <= 1.0 or not 0.0 < fraction <= 1.0:
            raise ValueError(
                f'quantile must be in [0, 1] and fraction in (0, 1], got {quantile}, {fraction}'
            )
        scores = self._layout(real, _clean(real['image'])).scores['layout']
        scores = scores[~scores.isnan()]
        if not len(scores):
            raise ValueError('no real mask holds a class the layout rule scores')
        self.layout_threshold = fraction * float(torch.quantile(scores, quantile))
        return self.layout_threshold

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
    def _objects(self, batch: Mapping[str, Any], images: Tensor) -> _Verdict:
        """Every box's class scored by the object classifier inside the box."""
        model = self.object_classifier
        assert model is not None
        scores = object_scores(
            lambda crops: self._run_model(model, crops, probabilities),
            images,
            batch,
            self.object_label_map,
            self.object_size,
            self.object_context,
        )
        weakest = torch.tensor(
            [float(s.nan_to_num(1.0).min()) if len(s) else float('nan') for s in scores]
        )
        ok = ~(weakest < self.object_threshold)  # images without (known) boxes pass
        labels = batch[DETECTION_LABELS]
        why = {
            i: object_reason(scores[i], torch.as_tensor(labels[i]), self.object_threshold)
            for i in _failed(ok)
        }
        return _Verdict(ok, {'objects': weakest}, why)

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


__all__ = ('NoveltyFeatures',)
