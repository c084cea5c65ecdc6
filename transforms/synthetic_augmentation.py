# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Synthetic data augmentation of downstream training batches (batch module and callback)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.models import SD15_ID
from torchgeo_earthsynth.seeding import seed_for_rank
from torchgeo_earthsynth.synthesis import SchedulerName, Synthesizer
from torchgeo_earthsynth.vocabulary import (
    BACKGROUND,
    NUM_CLASSES,
    label_map,
    prompt_from_ids,
)

#: Codes of :attr:`SyntheticPlan.origin`.
REAL: Final[int] = 0
GENERATED: Final[int] = 1
BANK: Final[int] = 2

#: Keys of :attr:`SyntheticAugmentation.stats`.
STAT_KEYS: Final[tuple[str, ...]] = (
    'seen',
    'replaced',
    'appended',
    'dropped_by_filter',
    'from_bank',
    'generated',
    'unavailable',
    'added_to_bank',
)

Task = Literal['segmentation', 'classification', 'detection']
Batch = dict[str, Any]


@runtime_checkable
class BankLike(Protocol):
    """What :class:`SyntheticAugmentation` needs of a bank (e.g. ``SyntheticBank``).

    ``sample`` returns sample dicts (``image`` float32 [3, H, W] in 0..255, ``mask`` int64
    [H, W] vocabulary ids, ...) and raises ``ValueError`` when the bank holds nothing
    (matching ``classes``, when given: samples containing any of these vocabulary ids).
    ``add`` is only needed with ``add_to_bank=True``.

    .. versionadded:: 0.1
    """

    def __len__(self) -> int:
        """Number of samples in the bank."""
        ...

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        classes: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Draw ``n`` samples."""
        ...


#: An R-Filter: ``rfilter(batch)`` (one argument, like
#: :class:`~torchgeo_earthsynth.rfilter.RFilter`) or ``rfilter(images, masks, prompts)``,
#: returning a bool tensor [N] or an object with such a ``keep``.
FilterLike = Callable[..., Any]


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


class SynthesizerLoader:
    """A YAML-friendly, lazily built :class:`~torchgeo_earthsynth.synthesis.Synthesizer`.

    Configs cannot build a diffusers pipeline inline; this holds the arguments and builds the
    synthesizer on first use (on the first training batch), so parsing a config loads nothing
    and a datamodule holding it pickles cheaply (DDP spawn, DataLoader workers).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        pretrained: str | Path | None = None,
        base: str | Path = SD15_ID,
        subfolder: str | None = None,
        tiny: bool = False,
        seed: int = 0,
        image_size: int = 64,
        scheduler: SchedulerName = 'unipc',
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        batch_size: int = 8,
    ) -> None:
        """Initialize a new SynthesizerLoader instance.

        Args:
            pretrained: our pipeline export, a ControlNet folder, or a hub id (e.g.
                ``jaychempan/EarthSynth``); see
                :meth:`~torchgeo_earthsynth.synthesis.Synthesizer.from_pretrained`.
            base: the Stable Diffusion base of a bare ControlNet.
            subfolder: the ControlNet's subfolder, if any.
            tiny: build an untrained tiny synthesizer instead (tests, demos).
            seed: initialisation seed of the tiny synthesizer.
            image_size: image size of the tiny synthesizer.
            scheduler: sampler used for inference.
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance scale (None: the synthesizer's default).
            batch_size: samples per forward pass.

        Raises:
            ValueError: unless exactly one of ``pretrained`` and ``tiny`` is given.
        """
        if tiny == (pretrained is not None):
            raise ValueError(
                'give exactly one of pretrained=<path or hub id> and tiny=True, '
                f'got pretrained={pretrained!r}, tiny={tiny}'
            )
        self.pretrained = pretrained
        self.base = base
        self.subfolder = subfolder
        self.tiny = tiny
        self.seed = seed
        self.image_size = image_size
        self.scheduler: SchedulerName = scheduler
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.batch_size = batch_size
        self._synthesizer: Synthesizer | None = None

    def get(self) -> Synthesizer:
        """The synthesizer, built on the first call.

        Returns:
            The :class:`~torchgeo_earthsynth.synthesis.Synthesizer`.
        """
        if self._synthesizer is None:
            kwargs: dict[str, Any] = {
                'scheduler': self.scheduler,
                'batch_size': self.batch_size,
                'num_inference_steps': self.num_inference_steps,
            }
            if self.guidance_scale is not None:
                kwargs['guidance_scale'] = self.guidance_scale
            if self.tiny:
                self._synthesizer = Synthesizer.tiny(self.seed, self.image_size, **kwargs)
            else:
                assert self.pretrained is not None
                self._synthesizer = Synthesizer.from_pretrained(
                    self.pretrained, self.base, self.subfolder, **kwargs
                )
        return self._synthesizer

    def __repr__(self) -> str:
        """Where the synthesizer comes from."""
        what = 'tiny=True' if self.tiny else f'pretrained={str(self.pretrained)!r}'
        return f'{type(self).__name__}({what}, num_inference_steps={self.num_inference_steps})'


@dataclass
class _Pool:
    """Pre-loaded samples on one device: what draws index into."""

    mask: Tensor  # uint8 [N, H, W] vocabulary ids
    counts: Tensor  # int64 [N, 67] pixels per vocabulary id
    image: Tensor | None = None  # uint8 [N, 3, H, W] (None for layout-only pools)

    def __len__(self) -> int:
        return int(self.mask.shape[0])


def _pixel_counts(mask: Tensor) -> Tensor:
    """int64 [N, 67] pixels per vocabulary id of masks [N, H, W]."""
    flat = mask.reshape(mask.shape[0], -1).long()
    counts = torch.zeros(mask.shape[0], NUM_CLASSES, dtype=torch.long, device=mask.device)
    return counts.scatter_add_(1, flat, torch.ones_like(flat))


def _resize_masks(mask: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(mask.shape[-2:]) == size:
        return mask
    out = F.interpolate(mask[:, None].float(), size=size, mode='nearest')[:, 0]
    return out.to(mask.dtype)


def _resize_images(image: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    dtype = image.dtype
    out = F.interpolate(image.float(), size=size, mode='bilinear', antialias=True)
    return out.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else out.to(dtype)


def _pool_from_samples(
    samples: Sequence[Mapping[str, Any]], size: tuple[int, int], images: bool, origin: str
) -> _Pool:
    """Stack sample dicts (any sizes) into a pool at ``size``; images rounded to uint8."""
    masks, pictures = [], []
    for i, sample in enumerate(samples):
        mask = sample.get('mask')
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f'{origin}, sample {i}: expected "mask" int64 [H, W] vocabulary ids, got {got}'
            )
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= NUM_CLASSES):
            raise ValueError(f'{origin}, sample {i}: mask ids must be in [0, {NUM_CLASSES - 1}]')
        masks.append(_resize_masks(mask.to(torch.uint8)[None], size)[0])
        if images:
            image = sample.get('image')
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(
                    f'{origin}, sample {i}: expected "image" float [3, H, W] in 0..255, got {got}'
                )
            image = image.float().round().clamp(0, 255).to(torch.uint8)
            pictures.append(_resize_images(image[None], size)[0])
    mask = torch.stack(masks)
    return _Pool(mask, _pixel_counts(mask), torch.stack(pictures) if images else None)


def _concat_pools(pools: Sequence[_Pool]) -> _Pool | None:
    pools = [p for p in pools if len(p)]
    if not pools:
        return None
    return _Pool(torch.cat([p.mask for p in pools]), torch.cat([p.counts for p in pools]))


def _to_vocab(mask: Tensor, lut: Tensor) -> Tensor:
    """Downstream class ids -> vocabulary ids (ignore/nodata values become background)."""
    mask = mask.long()
    inside = (mask >= 0) & (mask < len(lut))
    return torch.where(inside, lut[mask.clamp(0, len(lut) - 1)], BACKGROUND)


def _present_prompts(cond: Tensor) -> tuple[list[str], Tensor]:
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
    boxes overlap (so small objects stay visible on large ones); other pixels are background.

    Args:
        boxes: per image, float [N, 4] ``(x0, y0, x1, y1)`` in pixels (TorchGeo's
            ``bbox_xyxy``).
        labels: per image, int [N] downstream class indices (TorchGeo's ``label``).
        lut: int64 [C] vocabulary id per downstream class
            (:func:`~torchgeo_earthsynth.vocabulary.label_map`).
        size: (height, width) of the masks.

    Returns:
        int64 [B, H, W] vocabulary-id masks on the device of ``lut``.

    Raises:
        ValueError: if boxes and labels disagree or a label is outside ``lut``.

    .. versionadded:: 0.1
    """
    if len(boxes) != len(labels):
        raise ValueError(f'{len(boxes)} box tensors but {len(labels)} label tensors')
    height, width = size
    device = lut.device
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    out = torch.zeros(len(boxes), height, width, dtype=torch.long, device=device)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        box = box.to(device, torch.float32).reshape(-1, 4)
        label = label.to(device, torch.long).reshape(-1)
        if box.shape[0] != label.shape[0]:
            raise ValueError(f'image {i}: {box.shape[0]} boxes but {label.shape[0]} labels')
        if not len(box):
            continue
        if int(label.min()) < 0 or int(label.max()) >= len(lut):
            raise ValueError(
                f'image {i}: box labels must be in [0, {len(lut) - 1}], got '
                f'{sorted(set(label.tolist()))}'
            )
        x0, y0, x1, y1 = box.unbind(1)
        inside = (
            (ys[None, :, None] >= y0[:, None, None])
            & (ys[None, :, None] < y1[:, None, None])
            & (xs[None, None, :] >= x0[:, None, None])
            & (xs[None, None, :] < x1[:, None, None])
        )
        area = ((x1 - x0) * (y1 - y0))[:, None, None].expand_as(inside)
        smallest = torch.where(inside, area, torch.inf).argmin(0)
        out[i] = torch.where(inside.any(0), lut[label][smallest], BACKGROUND)
    return out


class SyntheticAugmentation(nn.Module):
    """Swap or append synthetic samples with exact labels into downstream training batches.

    A batch-level module for a TorchGeo datamodule's ``train_aug`` slot. It works on raw
    batches (images in 0..255, as collated, on the device) and then runs ``then``, the
    datamodule's own augmentation (normalisation, flips...), so switching it on changes
    nothing else about the batch. To use it with any TorchGeo datamodule::

        dm = LoveDADataModule(root='data/loveda', batch_size=16)
        synthetic = SyntheticAugmentation(LoveDA.classes, dataset='LoveDA', source='bank',
                                          bank=SyntheticBank('output/bank'))
        attach(dm, synthetic)  # synthetic.then = dm.train_aug or dm.aug; dm.train_aug = synthetic

    With probability ``p`` each sample gets a synthetic counterpart that replaces it
    (``mode='replace'``) or is appended to the batch (``mode='append'``). Its label is exact:

    * ``segmentation``: online, the sample's own mask mapped to vocabulary ids (``classes``
      through :func:`~torchgeo_earthsynth.vocabulary.label_map`) is the ControlNet condition
      and stays the label; with ``cf_comp`` the conditions are first recomposed
      counterfactually (e.g. by
      :class:`~torchgeo_earthsynth.transforms.cf_comp.CounterfactualComposition` over the
      batch) and recomposed pixels get the downstream class of their new vocabulary id. From
      the bank, a whole bank sample (image and mask) replaces the sample, its mask mapped back
      to downstream ids; only bank samples whose every id maps back are drawn (or every one,
      with ids outside ``classes`` becoming ``unmapped_index``).
    * ``classification``: the label (a class index) stays. Online, the prompt is
      ``prompt_from_ids([vocab id])`` and the condition is a layout of that class, cut out as
      EarthSynth-180K's single-category samples are (the class's pixels, background
      elsewhere), from a bank sample or a ``layouts`` corpus sample that contains it. From
      the bank, a bank sample containing the class (``class_rule='contains'``) or dominated by
      it (``'dominant'``: most non-background pixels). Classes mapping to background are never
      synthesised.
    * ``detection`` (online only): the boxes (``bbox_xyxy``, ``label``) are rasterised into the
      condition (:func:`rasterize_boxes`); boxes and labels stay.

    ``source='online'`` generates with ``synthesizer`` on the batch's device (it moves the
    pipeline there itself, generating under :func:`torch.inference_mode`); ``'bank'`` draws
    from ``bank``; ``'both'`` draws from the bank with probability ``bank_share`` and generates
    otherwise, each falling back to the other when it has nothing suitable. Bank samples are
    pre-loaded into a tensor cache of ``cache_size`` samples on the batch's device (resized to
    the batch; images rounded to uint8), reloaded every ``cache_refresh`` batches (after the
    bank's own ``refresh()``, if it has one, so newly added samples show), so drawing costs
    no disk access. Bank samples were R-Filtered when they were banked; generated ones
    go through ``rfilter`` here, and a sample it drops keeps its real sample.

    The R-Filter protocol: a callable taking one argument (like
    :class:`~torchgeo_earthsynth.rfilter.RFilter`) gets a batch dict with ``image`` float
    [N, 3, H, W] 0..255, ``mask`` int64 [N, H, W] (the conditions, vocabulary ids),
    ``prompt`` (N strings) and ``reference`` (the real images the samples stand for); one
    taking three gets ``(images, masks, prompts)``. It returns a bool tensor [N] or an object
    with such a ``keep`` attribute.

    Keys of the batch other than those above are kept; in ``append`` mode each appended row
    copies them from its source row (tensors with a batch dimension, lists of length B), and
    ``prompt``, ``source`` and ``categories`` (when present) describe the synthetic sample.
    :attr:`stats` counts what happened; :attr:`last_plan` says which rows are synthetic. All
    random draws come from a CPU generator seeded with ``seed``: the same batches give the
    same result on any device.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        classes: Sequence[str] | None = None,
        task: Task = 'segmentation',
        source: Literal['online', 'bank', 'both'] = 'bank',
        p: float = 0.5,
        mode: Literal['replace', 'append'] = 'replace',
        synthesizer: Synthesizer | SynthesizerLoader | None = None,
        bank: BankLike | None = None,
        layouts: EarthSynth180K | None = None,
        rfilter: FilterLike | None = None,
        cf_comp: nn.Module | None = None,
        then: Callable[[Batch], Batch] | None = None,
        dataset: str | None = None,
        overrides: dict[str, int | str] | None = None,
        unmapped_index: int | None = None,
        class_rule: Literal['contains', 'dominant'] = 'contains',
        bank_share: float = 0.5,
        cache_size: int = 256,
        cache_refresh: int | None = None,
        add_to_bank: bool = False,
        seed: int = 0,
    ) -> None:
        """Initialize a new SyntheticAugmentation instance.

        Args:
            classes: the downstream classes in index order (e.g. ``LoveDA.classes``); may be
                left out and set later with :meth:`bind` (downstream datamodules do).
            task: ``segmentation``, ``classification`` or ``detection``.
            source: ``online`` generation, ``bank`` draws, or ``both``.
            p: probability that a sample gets a synthetic counterpart, in [0, 1].
            mode: ``replace`` the sample or ``append`` the synthetic one to the batch.
            synthesizer: a :class:`~torchgeo_earthsynth.synthesis.Synthesizer` (or a
                :class:`SynthesizerLoader`, for configs), for ``online``/``both``.
            bank: a bank of synthetic samples (:class:`BankLike`, e.g. ``SyntheticBank``),
                for ``bank``/``both``; also a source of classification layouts.
            layouts: a corpus (:class:`~torchgeo_earthsynth.datasets.EarthSynth180K` or a
                subclass) to draw classification layouts from.
            rfilter: R-Filter for generated samples (see the protocol above).
            cf_comp: batch module recomposing the segmentation conditions counterfactually
                (takes and returns a vocabulary batch: ``image``, ``mask``, ``prompt``,
                ``categories``, ``source``).
            then: applied to the batch afterwards: the datamodule's own augmentation.
            dataset: the :data:`~torchgeo_earthsynth.vocabulary.LABEL_MAPS` table to map
                ``classes`` with (e.g. ``'LoveDA'``).
            overrides: extra ``{class name: vocabulary id or name}`` entries.
            unmapped_index: downstream index that vocabulary ids outside ``classes`` map to
                in bank masks (as the downstream dataset does, e.g. background); None draws
                only bank samples whose every id maps back.
            class_rule: which bank samples can stand for a classification label.
            bank_share: with ``source='both'``, the probability of drawing from the bank.
            cache_size: bank (and layout) samples kept in the cache.
            cache_refresh: reload the cache every this many batches; None never.
            add_to_bank: add generated samples that pass the R-Filter to ``bank``.
            seed: seed of the random draws.

        Raises:
            ValueError: if an argument is out of range, a needed source is missing, or a
                class has no vocabulary mapping.
        """
        super().__init__()
        for name, value in (('p', p), ('bank_share', bank_share)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        if task not in ('segmentation', 'classification', 'detection'):
            raise ValueError(
                f"task must be 'segmentation', 'classification' or 'detection', got {task!r}"
            )
        if source not in ('online', 'bank', 'both'):
            raise ValueError(f"source must be 'online', 'bank' or 'both', got {source!r}")
        if mode not in ('replace', 'append'):
            raise ValueError(f"mode must be 'replace' or 'append', got {mode!r}")
        if class_rule not in ('contains', 'dominant'):
            raise ValueError(f"class_rule must be 'contains' or 'dominant', got {class_rule!r}")
        if source in ('online', 'both') and synthesizer is None:
            raise ValueError(f'source={source!r} needs a synthesizer')
        if source in ('bank', 'both') and bank is None:
            raise ValueError(f'source={source!r} needs a bank')
        if task == 'detection' and source != 'online':
            raise ValueError(
                "task='detection' supports source='online' only: bank samples "
                'carry masks, not boxes'
            )
        if task == 'classification' and source != 'bank' and bank is None and layouts is None:
            raise ValueError(
                "task='classification' with online generation needs layouts: "
                'pass bank=... or layouts=<corpus dataset>'
            )
        if add_to_bank and (bank is None or synthesizer is None):
            raise ValueError('add_to_bank=True needs both a bank and a synthesizer')
        if cache_size < 1:
            raise ValueError(f'cache_size must be >= 1, got {cache_size}')
        if cache_refresh is not None and cache_refresh < 1:
            raise ValueError(f'cache_refresh must be None or >= 1, got {cache_refresh}')
        self.task: Task = task
        self.source = source
        self.p = p
        self.mode = mode
        self.synthesizer = synthesizer
        self.bank = bank
        self.layouts = layouts
        self.rfilter = rfilter
        self.cf_comp = cf_comp
        self.then = then
        self.unmapped_index = unmapped_index
        self.class_rule = class_rule
        self.bank_share = bank_share
        self.cache_size = cache_size
        self.cache_refresh = cache_refresh
        self.add_to_bank = add_to_bank
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._seeded_rank = 0
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.last_plan: SyntheticPlan | None = None
        self.classes: tuple[str, ...] | None = None
        self._batches = 0
        self._bank_pool: _Pool | None = None
        self._layout_pool: _Pool | None = None
        self._candidates: dict[str, list[Tensor]] = {}
        if classes is not None:
            self.bind(classes, dataset, overrides)
        else:
            self._dataset, self._overrides = dataset, overrides

    # ------------------------------------------------------------------ set-up
    def bind(
        self,
        classes: Sequence[str],
        dataset: str | None = None,
        overrides: Mapping[str, int | str] | None = None,
    ) -> None:
        """Set the downstream classes (and their vocabulary mapping).

        Args:
            classes: the downstream classes in index order.
            dataset: :data:`~torchgeo_earthsynth.vocabulary.LABEL_MAPS` table to use
                (default: the one given at construction).
            overrides: extra mappings (default: those given at construction).

        Raises:
            ValueError: if a class has no vocabulary mapping (naming it), the classes differ
                from those already bound, or ``unmapped_index`` is out of range.
        """
        classes = tuple(classes)
        if self.classes is not None:
            if classes != self.classes:
                raise ValueError(
                    f'SyntheticAugmentation is bound to classes {self.classes}, not {classes}'
                )
            return
        dataset = dataset if dataset is not None else getattr(self, '_dataset', None)
        overrides = overrides if overrides is not None else getattr(self, '_overrides', None)
        lut = label_map(classes, dataset=dataset, overrides=overrides)
        if self.unmapped_index is not None and not 0 <= self.unmapped_index < len(classes):
            raise ValueError(
                f'unmapped_index must be in [0, {len(classes) - 1}], got {self.unmapped_index}'
            )
        fill = -1 if self.unmapped_index is None else self.unmapped_index
        inverse = torch.full((NUM_CLASSES,), fill, dtype=torch.long)
        for index in reversed(range(len(classes))):  # the first class of an id wins
            inverse[lut[index]] = index
        self.classes = classes
        self.lut = lut
        self.inverse = inverse
        self._tables: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._candidates = {}

    def _tables_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(lut, inverse)`` on ``device``, copied once per device."""
        if device not in self._tables:
            self._tables[device] = (self.lut.to(device), self.inverse.to(device))
        return self._tables[device]

    def reset_stats(self) -> None:
        """Set every counter of :attr:`stats` to 0."""
        self.stats = dict.fromkeys(STAT_KEYS, 0)

    def extra_repr(self) -> str:
        """The main options, for ``print(module)``."""
        return (
            f'task={self.task!r}, source={self.source!r}, p={self.p}, mode={self.mode!r}, '
            f'classes={self.classes}, seed={self.seed}'
        )

    def _get_synthesizer(self, device: torch.device) -> Synthesizer:
        assert self.synthesizer is not None
        synth = self.synthesizer
        if isinstance(synth, SynthesizerLoader):
            synth = synth.get()
        # Datamodule attributes are not moved by Lightning.
        if synth.device != device:
            synth.pipeline.to(device)
        return synth

    # ------------------------------------------------------------------ caches
    def _load_pools(self, size: tuple[int, int], device: torch.device) -> None:
        """Fill the bank and layout caches (on ``device``, at ``size``)."""
        self._bank_pool = None
        self._layout_pool = None
        layout_pools: list[_Pool] = []
        if self.bank is not None:
            refresh = getattr(self.bank, 'refresh', None)
            if self._batches and callable(refresh):  # see what was added since (SyntheticBank)
                refresh()
            samples: list[dict[str, Any]] = []
            if len(self.bank):
                samples = list(
                    self.bank.sample(min(self.cache_size, len(self.bank)), generator=self.generator)
                )
            if self.task == 'classification':
                samples += self._class_coverage(samples)
            if samples:
                self._bank_pool = _pool_from_samples(samples, size, True, 'bank')
                layout_pools.append(self._bank_pool)
            elif self.source == 'bank':
                raise ValueError(
                    f'the bank {self.bank!r} is empty; fill it (e.g. with '
                    '`earthsynth synthesize`) or use source="online"/"both"'
                )
        if self.layouts is not None and self.task == 'classification':
            count = min(self.cache_size, len(self.layouts))
            order = torch.randperm(len(self.layouts), generator=self.generator)[:count]
            samples = [self.layouts[int(i)] for i in order]
            layout_pools.append(_pool_from_samples(samples, size, False, 'layouts'))
        self._layout_pool = _concat_pools(layout_pools)
        for pool in (self._bank_pool, self._layout_pool):
            if pool is not None:
                pool.mask, pool.counts = pool.mask.to(device), pool.counts.to(device)
                if pool.image is not None:
                    pool.image = pool.image.to(device)
        self._candidates = {}

    def _class_coverage(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Extra bank samples for classification labels the first draw does not cover."""
        assert self.bank is not None and self.classes is not None
        extra: list[dict[str, Any]] = []
        have: set[int] = set()
        for sample in samples:
            have.update(int(i) for i in torch.unique(sample['mask']).tolist())
        per_class = max(1, self.cache_size // (2 * len(self.classes)))
        for vocab_id in sorted({int(v) for v in self.lut.tolist()} - have - {BACKGROUND}):
            try:
                extra += self.bank.sample(per_class, generator=self.generator, classes=[vocab_id])
            except ValueError:  # the bank holds no sample of this class
                continue
        return extra

    def _bank_candidates(self) -> list[Tensor]:
        """Per downstream class (classification) or overall (segmentation): usable bank rows."""
        if 'bank' not in self._candidates:
            pool = self._bank_pool
            if pool is None:
                found: list[Tensor] = []
            elif self.task == 'segmentation':
                inverse = self.inverse.to(pool.counts.device)
                unmapped = ((pool.counts > 0) & (inverse < 0)[None]).any(1)
                found = [(~unmapped).nonzero().flatten().cpu()]
            else:
                found = [self._rows_for(pool, int(v), self.class_rule) for v in self.lut]
            self._candidates['bank'] = found
        return self._candidates['bank']

    def _layout_candidates(self) -> list[Tensor]:
        """Per downstream class: layout rows containing its vocabulary id."""
        if 'layout' not in self._candidates:
            pool = self._layout_pool
            self._candidates['layout'] = [
                self._rows_for(pool, int(v), 'contains')
                if pool is not None
                else torch.empty(0, dtype=torch.long)
                for v in self.lut
            ]
        return self._candidates['layout']

    @staticmethod
    def _rows_for(pool: _Pool, vocab_id: int, rule: str) -> Tensor:
        if vocab_id == BACKGROUND:
            return torch.empty(0, dtype=torch.long)
        ok = pool.counts[:, vocab_id] > 0
        if rule == 'dominant':
            ok &= pool.counts[:, 1:].argmax(1) + 1 == vocab_id
        return ok.nonzero().flatten().cpu()

    def _pick(self, rows: Tensor) -> int | None:
        if not len(rows):
            return None
        return int(rows[int(torch.randint(len(rows), (1,), generator=self.generator))])

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch) -> Batch:
        """Augment a raw training batch, then apply ``then``.

        Args:
            batch: a collated batch on its device, images in 0..255: ``image`` [B, 3, H, W]
                and ``mask`` int [B, H, W] (segmentation), ``label`` int [B]
                (classification), or ``bbox_xyxy`` and ``label`` lists (detection).

        Returns:
            The augmented batch (after ``then``).

        Raises:
            ValueError: if the batch lacks a key of the task or holds ids outside ``classes``.
        """
        out, _ = self.augment(batch)
        return self.then(out) if self.then is not None else out

    @torch.no_grad()
    def augment(self, batch: Batch) -> tuple[Batch, SyntheticPlan]:
        """Augment a raw batch (without ``then``) and say how.

        Args:
            batch: as for :meth:`forward`.

        Returns:
            The new batch (the input dict itself when nothing changed) and its plan.

        Raises:
            ValueError: as for :meth:`forward`.
        """
        if self.classes is None:
            raise ValueError(
                'SyntheticAugmentation has no classes: pass classes=... or call '
                'bind(classes) (downstream datamodules do it for you)'
            )
        image = self._check(batch)
        b, device = image.shape[0], image.device
        size = (int(image.shape[-2]), int(image.shape[-1]))
        self._seeded_rank = seed_for_rank(self.generator, self.seed, self._seeded_rank)
        self.stats['seen'] += b
        needs_pools = self.bank is not None or self.layouts is not None
        refresh = self.cache_refresh is not None and self._batches % self.cache_refresh == 0
        if needs_pools and (self._batches == 0 or refresh):
            self._load_pools(size, device)
        self._batches += 1

        chosen = (torch.rand(b, generator=self.generator) < self.p).nonzero().flatten().tolist()
        from_bank = torch.rand(b, generator=self.generator) < self.bank_share
        lut = self._tables_on(device)[0]
        # (row, origin, online condition or None, bank index or None)
        picks: list[tuple[int, int, Tensor | None, int | None]] = []
        online_conditions = self._online_conditions(batch, chosen, lut, size)
        for row in chosen:
            origin = self._choose_origin(batch, row, bool(from_bank[row]), online_conditions)
            if origin is None:
                self.stats['unavailable'] += 1
            else:
                picks.append((row, *origin))
        return self._assemble(batch, picks, size, device)

    def _check(self, batch: Batch) -> Tensor:
        if not isinstance(batch, Mapping):
            raise ValueError(f'SyntheticAugmentation expects a dict batch, got {type(batch)}')
        need = {
            'segmentation': ('image', 'mask'),
            'classification': ('image', 'label'),
            'detection': ('image', 'bbox_xyxy', 'label'),
        }[self.task]
        missing = [key for key in need if key not in batch]
        if missing:
            raise ValueError(
                f'task={self.task!r} needs batch keys {list(need)}; missing '
                f'{missing} (batch has {sorted(batch)})'
            )
        image = batch['image']
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f'batch["image"] must be a tensor [B, 3, H, W] in 0..255, got {got}')
        assert self.classes is not None
        if self.task == 'segmentation':
            mask = batch['mask']
            if not isinstance(mask, Tensor) or mask.shape != (image.shape[0], *image.shape[2:]):
                got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(
                    f'batch["mask"] must be an int tensor [B, H, W] matching the '
                    f'image {tuple(image.shape)}, got {got}'
                )
        elif self.task == 'classification':
            label = batch['label']
            if not isinstance(label, Tensor) or label.shape != (image.shape[0],):
                got = tuple(label.shape) if isinstance(label, Tensor) else type(label).__name__
                raise ValueError(
                    f'batch["label"] must be an int tensor [B] of class indices '
                    f'(multiclass), got {got}'
                )
            if len(label) and (int(label.min()) < 0 or int(label.max()) >= len(self.classes)):
                raise ValueError(
                    f'batch["label"] holds {sorted(set(label.tolist()))}; '
                    f'expected indices of {self.classes}'
                )
        return image

    def _online_conditions(
        self, batch: Batch, chosen: list[int], lut: Tensor, size: tuple[int, int]
    ) -> Tensor | None:
        """Vocabulary-id conditions of the whole batch (segmentation, detection), else None."""
        if self.source == 'bank' or not chosen:
            return None
        match self.task:
            case 'segmentation':
                cond = _to_vocab(batch['mask'], lut)
                if self.cf_comp is not None:
                    cond = self._recompose(batch, cond)
                return cond
            case 'detection':
                return rasterize_boxes(batch['bbox_xyxy'], batch['label'], lut, size)
        return None

    def _recompose(self, batch: Batch, cond: Tensor) -> Tensor:
        assert self.cf_comp is not None
        prompts, present = _present_prompts(cond)
        source = batch.get('source')
        vocab_batch = {
            'image': batch['image'],
            'mask': cond,
            'prompt': prompts,
            'categories': present,
            'source': list(source) if isinstance(source, list) else ['real'] * len(cond),
        }
        if isinstance(self.cf_comp, nn.Module):
            self.cf_comp.to(cond.device)
        composed: Tensor = self.cf_comp(vocab_batch)['mask']
        return composed.long()

    def _choose_origin(
        self, batch: Batch, row: int, bank_first: bool, online: Tensor | None
    ) -> tuple[int, Tensor | None, int | None] | None:
        """``(origin, online condition, bank index)`` for one chosen row, or None."""
        label = int(batch['label'][row]) if self.task == 'classification' else 0

        def bank() -> tuple[int, Tensor | None, int | None] | None:
            if self.source == 'online':
                return None
            candidates = self._bank_candidates()
            index = self._pick(candidates[label] if candidates else torch.empty(0))
            return None if index is None else (BANK, None, index)

        def generate() -> tuple[int, Tensor | None, int | None] | None:
            if self.source == 'bank':
                return None
            if self.task != 'classification':
                assert online is not None
                return GENERATED, online[row], None
            vocab_id = int(self.lut[label])
            index = self._pick(self._layout_candidates()[label])
            if index is None:
                return None
            assert self._layout_pool is not None
            layout = self._layout_pool.mask[index].long()
            return GENERATED, torch.where(layout == vocab_id, vocab_id, BACKGROUND), None

        if self.source == 'bank' or (self.source == 'both' and bank_first):
            return bank() or generate()
        return generate() or bank()

    def _assemble(
        self,
        batch: Batch,
        picks: list[tuple[int, int, Tensor | None, int | None]],
        size: tuple[int, int],
        device: torch.device,
    ) -> tuple[Batch, SyntheticPlan]:
        rows: list[int] = []
        origins: list[int] = []
        images: list[Tensor] = []
        conditions: list[Tensor] = []
        labels: list[Tensor | None] = []

        bank_picks = [(row, index) for row, origin, _, index in picks if origin == BANK]
        if bank_picks:
            assert self._bank_pool is not None and self._bank_pool.image is not None
            index = torch.tensor([i for _, i in bank_picks], device=device)
            bank_images = _resize_images(self._bank_pool.image[index].float(), size)
            bank_masks = _resize_masks(self._bank_pool.mask[index].long(), size)
            bank_labels = self._tables_on(device)[1][bank_masks]
            for k, (row, _) in enumerate(bank_picks):
                rows.append(row)
                origins.append(BANK)
                images.append(bank_images[k])
                conditions.append(bank_masks[k])
                labels.append(bank_labels[k])
            self.stats['from_bank'] += len(bank_picks)

        generated = [(row, cond) for row, origin, cond, _ in picks if origin == GENERATED]
        if generated:
            cond = torch.stack([c for _, c in generated if c is not None]).long()
            gen_rows = [row for row, _ in generated]
            if self.task == 'classification':
                prompts = [
                    prompt_from_ids([int(self.lut[int(batch['label'][r])])]) for r in gen_rows
                ]
            else:
                prompts = _present_prompts(cond)[0]
            seeds = torch.randint(0, 2**31 - 1, (len(cond),), generator=self.generator)
            synth = self._get_synthesizer(device)
            with torch.inference_mode():
                fake = synth.generate(cond, prompts, seeds.tolist())
            fake = fake.clone()  # a normal tensor again, usable with autograd downstream
            self.stats['generated'] += len(cond)
            keep = self._filter(fake, cond, prompts, batch['image'][gen_rows])
            self.stats['dropped_by_filter'] += int((~keep).sum())
            if self.add_to_bank and keep.any():
                self._bank_add(fake, cond, prompts, keep)
            for k, row in enumerate(gen_rows):
                if not keep[k]:
                    continue
                rows.append(row)
                origins.append(GENERATED)
                images.append(fake[k])
                conditions.append(cond[k])
                labels.append(self._segmentation_label(batch, row, cond[k]))

        self.stats['replaced' if self.mode == 'replace' else 'appended'] += len(rows)
        return self._insert(batch, rows, origins, images, conditions, labels, size, device)

    def _segmentation_label(self, batch: Batch, row: int, cond: Tensor) -> Tensor | None:
        """The label mask of a generated segmentation sample: exact for its condition."""
        if self.task != 'segmentation':
            return None
        real: Tensor = batch['mask'][row]
        if self.cf_comp is None:
            return real
        # Pixels whose condition CF-Comp changed get the class of their new vocabulary id.
        lut, inverse = self._tables_on(real.device)
        unchanged = _to_vocab(real, lut) == cond
        return torch.where(unchanged, real, inverse[cond].to(real.dtype))

    def _filter(self, images: Tensor, masks: Tensor, prompts: list[str], real: Tensor) -> Tensor:
        """Which generated samples the R-Filter keeps: bool [N] on the CPU."""
        if self.rfilter is None:
            return torch.ones(len(images), dtype=torch.bool)
        if isinstance(self.rfilter, nn.Module):
            self.rfilter.to(images.device)
        if _positional_arity(self.rfilter) == 1:
            batch = {'image': images, 'mask': masks, 'prompt': prompts, 'reference': real}
            result = self.rfilter(batch)
        else:
            result = self.rfilter(images, masks, prompts)
        keep = torch.as_tensor(getattr(result, 'keep', result)).to('cpu', torch.bool).flatten()
        if keep.shape != (len(images),):
            raise ValueError(
                f'the R-Filter returned keep of shape {tuple(keep.shape)} for '
                f'{len(images)} samples; expected a bool tensor [{len(images)}]'
            )
        return keep

    def _bank_add(self, images: Tensor, masks: Tensor, prompts: list[str], keep: Tensor) -> None:
        assert self.bank is not None
        add = getattr(self.bank, 'add', None)
        if add is None:
            raise ValueError(f'add_to_bank=True but the bank {self.bank!r} has no add()')
        _, present = _present_prompts(masks)
        samples = [
            {
                'image': images[k].detach().cpu(),
                'mask': masks[k].cpu(),
                'prompt': prompts[k],
                'categories': present[k].cpu(),
                'source': 'synthetic',
            }
            for k in keep.nonzero().flatten().tolist()
        ]
        self.stats['added_to_bank'] += int(add(samples))

    def _insert(
        self,
        batch: Batch,
        rows: list[int],
        origins: list[int],
        images: list[Tensor],
        conditions: list[Tensor],
        labels: list[Tensor | None],
        size: tuple[int, int],
        device: torch.device,
    ) -> tuple[Batch, SyntheticPlan]:
        b = batch['image'].shape[0]
        origin = torch.zeros(b, dtype=torch.long, device=device)
        source_index = torch.arange(b, device=device)
        condition = torch.full((b, *size), -1, dtype=torch.long, device=device)
        if not rows:
            self.last_plan = SyntheticPlan(origin, source_index, condition)
            return batch, self.last_plan
        index = torch.tensor(rows, device=device)
        synth_image = torch.stack(images).to(batch['image'].dtype)
        synth_cond = torch.stack(conditions).long()
        # classification prompts name the label's class
        classes = None
        if self.task == 'classification':
            classes = [int(batch['label'][r]) for r in rows]
        out = dict(batch)
        if self.mode == 'replace':
            out['image'] = batch['image'].clone()
            out['image'][index] = synth_image
            if self.task == 'segmentation':
                out['mask'] = batch['mask'].clone()
                out['mask'][index] = torch.stack([x for x in labels if x is not None]).to(
                    batch['mask'].dtype
                )
            self._describe(out, rows, synth_cond, classes)
            origin[index] = torch.tensor(origins, device=device)
            condition[index] = synth_cond
            self.last_plan = SyntheticPlan(origin, source_index, condition)
            return out, self.last_plan
        # append: copy every other per-sample field from the source row
        for key, value in batch.items():
            if isinstance(value, Tensor) and value.dim() and value.shape[0] == b:
                out[key] = torch.cat([value, value[index.to(value.device)]])
            elif isinstance(value, list) and len(value) == b:
                out[key] = value + [value[r] for r in rows]
        out['image'] = torch.cat([batch['image'], synth_image])
        if self.task == 'segmentation':
            synth_mask = torch.stack([x for x in labels if x is not None])
            out['mask'] = torch.cat([batch['mask'], synth_mask.to(batch['mask'].dtype)])
        self._describe(out, list(range(b, b + len(rows))), synth_cond, classes)
        self.last_plan = SyntheticPlan(
            torch.cat([origin, torch.tensor(origins, device=device)]),
            torch.cat([source_index, index]),
            torch.cat([condition, synth_cond]),
        )
        return out, self.last_plan

    def _describe(
        self, out: Batch, rows: list[int], cond: Tensor, labels: list[int] | None
    ) -> None:
        """Set ``prompt``, ``source`` and ``categories`` of synthetic rows, where present."""
        if isinstance(out.get('source'), list):
            out['source'] = list(out['source'])
            for row in rows:
                out['source'][row] = 'synthetic'
        has_prompt = isinstance(out.get('prompt'), list)
        categories = out.get('categories')
        has_categories = isinstance(categories, Tensor) and categories.shape[-1] == NUM_CLASSES
        if not (has_prompt or has_categories):
            return  # spare the conditions' copy to the CPU
        prompts, present = _present_prompts(cond)
        if labels is not None:  # classification: the class's own prompt
            prompts = [prompt_from_ids([int(self.lut[label])]) for label in labels]
        if has_prompt:
            out['prompt'] = list(out['prompt'])
            for row, prompt in zip(rows, prompts):
                out['prompt'][row] = prompt
        if isinstance(categories, Tensor) and has_categories:
            categories = categories.clone()
            categories[torch.tensor(rows, device=categories.device)] = present.to(categories)
            out['categories'] = categories


def _positional_arity(function: Callable[..., Any]) -> int:
    """How many positional parameters a callable takes without defaults (3 when unknown)."""
    if isinstance(function, nn.Module):  # its __call__ takes (*args, **kwargs)
        function = function.forward
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return 3
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def attach(datamodule: Any, augmentation: SyntheticAugmentation) -> None:
    """Put ``augmentation`` into a TorchGeo datamodule's ``train_aug`` slot.

    The datamodule's own training augmentation (``train_aug``, else ``aug``) becomes the
    augmentation's ``then``, so batches are augmented raw and then processed exactly as
    before. Attaching twice does nothing.

    Args:
        datamodule: a TorchGeo ``BaseDataModule`` (anything with ``aug``/``train_aug``).
        augmentation: the synthetic augmentation.

    .. versionadded:: 0.1
    """
    if datamodule.train_aug is augmentation:
        return
    if augmentation.then is None:
        own = datamodule.train_aug if datamodule.train_aug is not None else datamodule.aug
        augmentation.then = own
    datamodule.train_aug = augmentation


class SyntheticAugmentationCallback(Callback):
    """Apply a :class:`SyntheticAugmentation` to the training batches of any LightningModule.

    In ``on_train_batch_start`` the batch dict is modified in place, so it works with any
    LightningModule and datamodule, with these limits:

    * batches must be dicts (as TorchGeo's); other batch types raise ``ValueError``;
    * the batch has already been through the datamodule's augmentation, so images are
      normalised: give the callback that ``mean`` and ``std`` (TorchGeo's default is 0 and
      255); synthetic images are normalised with them, and real rows are left untouched;
    * the augmentation's ``then`` is not applied, and geometric augmentations of the
      datamodule (flips, crops) have already happened: synthetic rows do not get them.

    Prefer :func:`attach` (the ``train_aug`` slot) with TorchGeo datamodules.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        augmentation: SyntheticAugmentation,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
    ) -> None:
        """Initialize a new SyntheticAugmentationCallback instance.

        Args:
            augmentation: the synthetic augmentation to apply.
            mean: mean the datamodule subtracted from images (scalar or per channel).
            std: std it divided them by (scalar or per channel).
        """
        super().__init__()
        self.augmentation = augmentation
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Augment the training batch in place.

        Args:
            trainer: the trainer.
            pl_module: the LightningModule being trained.
            batch: the batch (a dict).
            batch_idx: index of the batch.

        Raises:
            ValueError: if the batch is not a dict.
        """
        if not isinstance(batch, dict):
            raise ValueError(
                'SyntheticAugmentationCallback works on dict batches only, got '
                f'{type(batch).__name__}'
            )
        image = batch['image']
        mean, std = self.mean.to(image), self.std.to(image)
        raw = dict(batch)
        raw['image'] = image * std + mean
        out, plan = self.augmentation.augment(raw)
        normalised = (out['image'] - mean) / std
        real = plan.origin == REAL
        # keep the real rows bit-exact rather than round-tripped through (x * std + mean)
        normalised[real] = image[plan.source_index[real]]
        out['image'] = normalised
        batch.clear()
        batch.update(out)


__all__ = (
    'BANK',
    'GENERATED',
    'REAL',
    'BankLike',
    'FilterLike',
    'SynthesizerLoader',
    'SyntheticAugmentation',
    'SyntheticAugmentationCallback',
    'SyntheticPlan',
    'attach',
    'rasterize_boxes',
)
