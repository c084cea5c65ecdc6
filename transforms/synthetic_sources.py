# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Where synthetic samples come from: the synthesizer loader, the bank and layout caches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, get_args, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.vocabulary import BACKGROUND, NUM_CLASSES, class_histogram, present_ids

from .synthetic_boxes import pool_boxes, usable_rows
from .synthetic_loader import SynthesizerLoader

Task = Literal['segmentation', 'classification', 'detection']
Source = Literal['online', 'bank', 'both']
ClassRule = Literal['contains', 'dominant']
Mode = Literal['replace', 'append']

#: The values each string option of :class:`SyntheticAugmentation` may take.
OPTION_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    'task': get_args(Task),
    'source': get_args(Source),
    'mode': get_args(Mode),
    'class_rule': get_args(ClassRule),
}


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


@dataclass
class Pool:
    """Pre-loaded samples on one device: what draws index into."""

    mask: Tensor  # uint8 [N, H, W] vocabulary ids
    counts: Tensor  # int64 [N, 67] pixels per vocabulary id
    image: Tensor | None = None  # uint8 [N, 3, H, W] (None for layout-only pools)
    #: per row (boxes float [N, 4] at the pool's size, vocabulary ids), None without boxes
    boxes: list[tuple[Tensor, Tensor] | None] | None = None

    def __len__(self) -> int:
        return int(self.mask.shape[0])


def resize_masks(mask: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(mask.shape[-2:]) == size:
        return mask
    out = F.interpolate(mask[:, None].float(), size=size, mode='nearest')[:, 0]
    return out.to(mask.dtype)


def resize_images(image: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    dtype = image.dtype
    out = F.interpolate(image.float(), size=size, mode='bilinear', antialias=True)
    return out.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else out.to(dtype)


def _pool_from_samples(
    samples: Sequence[Mapping[str, Any]],
    size: tuple[int, int],
    images: bool,
    origin: str,
    boxes: bool = False,
) -> Pool:
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
        masks.append(resize_masks(mask.to(torch.uint8)[None], size)[0])
        if images:
            image = sample.get('image')
            if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
                got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(
                    f'{origin}, sample {i}: expected "image" float [3, H, W] in 0..255, got {got}'
                )
            image = image.float().round().clamp(0, 255).to(torch.uint8)
            pictures.append(resize_images(image[None], size)[0])
    mask = torch.stack(masks)
    return Pool(
        mask,
        class_histogram(mask),
        torch.stack(pictures) if images else None,
        pool_boxes(samples, size, origin) if boxes else None,
    )


def _concat_pools(pools: Sequence[Pool]) -> Pool | None:
    pools = [p for p in pools if len(p)]
    if not pools:
        return None
    return Pool(torch.cat([p.mask for p in pools]), torch.cat([p.counts for p in pools]))


def check_options(
    probabilities: Mapping[str, float],
    choices: Mapping[str, str],
    cache_size: int,
    cache_refresh: int | None,
) -> None:
    """Check :class:`SyntheticAugmentation`'s options are in range.

    Args:
        probabilities: ``{name: value}`` of options in [0, 1] (``p``, ``bank_share``).
        choices: ``{name: value}`` of string options (``task``, ``source``, ``mode``,
            ``class_rule``).
        cache_size: samples kept in the cache (>= 1).
        cache_refresh: batches between cache reloads (None or >= 1).

    Raises:
        ValueError: naming the option, its value and what it may be.
    """
    for name, value in probabilities.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f'{name} must be in [0, 1], got {value}')
    for option, given in choices.items():
        if given not in OPTION_CHOICES[option]:
            raise ValueError(f'{option} must be one of {OPTION_CHOICES[option]}, got {given!r}')
    if cache_size < 1:
        raise ValueError(f'cache_size must be >= 1, got {cache_size}')
    if cache_refresh is not None and cache_refresh < 1:
        raise ValueError(f'cache_refresh must be None or >= 1, got {cache_refresh}')


def check_sources(
    task: Task,
    source: Source,
    synthesizer: object | None,
    bank: BankLike | None,
    layouts: EarthSynth180K | None,
    add_to_bank: bool,
) -> None:
    """Check that what ``task`` and ``source`` need was given.

    Args:
        task: the downstream task.
        source: where synthetic samples come from.
        synthesizer: the synthesizer (or its loader), if any.
        bank: the bank, if any.
        layouts: the layout corpus, if any.
        add_to_bank: whether generated samples are banked.

    Raises:
        ValueError: naming what is missing.
    """
    if source in ('online', 'both') and synthesizer is None:
        raise ValueError(f'source={source!r} needs a synthesizer')
    if source in ('bank', 'both') and bank is None:
        raise ValueError(f'source={source!r} needs a bank')
    if task == 'classification' and source != 'bank' and bank is None and layouts is None:
        raise ValueError(
            "task='classification' with online generation needs layouts: "
            'pass bank=... or layouts=<corpus dataset>'
        )
    if add_to_bank and (bank is None or synthesizer is None):
        raise ValueError('add_to_bank=True needs both a bank and a synthesizer')


class SamplePools:
    """Bank and layout samples cached on the batch's device, and who may stand for a class.

    Draws index into these tensors, so drawing costs no disk access; all random draws use the
    augmentation's generator, in the order the augmentation makes them.
    """

    def __init__(
        self,
        bank: BankLike | None,
        layouts: EarthSynth180K | None,
        task: Task,
        source: Source,
        cache_size: int,
        class_rule: ClassRule,
        generator: torch.Generator,
    ) -> None:
        """Initialize a new SamplePools instance (empty until :meth:`load`).

        Args:
            bank: the bank of synthetic samples, if any.
            layouts: a corpus to draw classification layouts from, if any.
            task: the downstream task.
            source: where synthetic samples come from.
            cache_size: bank (and layout) samples kept.
            class_rule: which bank samples can stand for a classification label.
            generator: the CPU generator of the random draws.
        """
        self.bank = bank
        self.layouts = layouts
        self.task: Task = task
        self.source: Source = source
        self.cache_size = cache_size
        self.class_rule: ClassRule = class_rule
        self.generator = generator
        self.bank_pool: Pool | None = None
        self.layout_pool: Pool | None = None
        self._candidates: dict[str, list[Tensor]] = {}

    @property
    def needed(self) -> bool:
        """Whether there is anything to cache."""
        return self.bank is not None or self.layouts is not None

    def forget_candidates(self) -> None:
        """Drop the per-class candidate rows (after the class mapping changed)."""
        self._candidates = {}

    def load(
        self,
        size: tuple[int, int],
        device: torch.device,
        lut: Tensor,
        classes: Sequence[str],
        refresh_bank: bool,
    ) -> None:
        """Fill the bank and layout caches (on ``device``, at ``size``).

        Args:
            size: (height, width) of the batch.
            device: the batch's device.
            lut: int64 [C] vocabulary id per downstream class.
            classes: the downstream classes.
            refresh_bank: call the bank's ``refresh()`` first, if it has one, so samples
                added since show (``SyntheticBank``).

        Raises:
            ValueError: if the bank is empty and it is the only source.
        """
        self.bank_pool = None
        self.layout_pool = None
        layout_pools: list[Pool] = []
        if self.bank is not None:
            root = getattr(self.bank, 'root', None)
            if self.source == 'bank' and root is not None and not Path(root).exists():
                raise ValueError(f'the bank folder {root} does not exist ({self.bank!r})')
            refresh = getattr(self.bank, 'refresh', None)
            if refresh_bank and callable(refresh):
                refresh()
            samples: list[dict[str, Any]] = []
            if len(self.bank):
                samples = list(
                    self.bank.sample(min(self.cache_size, len(self.bank)), generator=self.generator)
                )
            if self.task == 'classification':
                samples += self._class_coverage(samples, lut, classes)
            if samples:
                detection = self.task == 'detection'
                self.bank_pool = _pool_from_samples(samples, size, True, 'bank', detection)
                layout_pools.append(self.bank_pool)
            elif self.source == 'bank':
                raise ValueError(
                    f'the bank {self.bank!r} is empty; fill it (e.g. with '
                    '`earthsynth synthesize`) or use source="online"/"both"'
                )
        if self.layouts is not None and self.task == 'classification':
            count = min(self.cache_size, len(self.layouts))
            order = torch.randperm(len(self.layouts), generator=self.generator)[:count]
            layout_samples = [self.layouts[int(i)] for i in order]
            layout_pools.append(_pool_from_samples(layout_samples, size, False, 'layouts'))
        self.layout_pool = _concat_pools(layout_pools)
        for pool in (self.bank_pool, self.layout_pool):
            if pool is not None:
                pool.mask, pool.counts = pool.mask.to(device), pool.counts.to(device)
                if pool.image is not None:
                    pool.image = pool.image.to(device)
        self._candidates = {}

    def _class_coverage(
        self, samples: list[dict[str, Any]], lut: Tensor, classes: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Extra bank samples for classification labels the first draw does not cover."""
        assert self.bank is not None
        extra: list[dict[str, Any]] = []
        have: set[int] = set()
        for sample in samples:
            have.update(present_ids(sample['mask']))
        per_class = max(1, self.cache_size // (2 * len(classes)))
        for vocab_id in sorted({int(v) for v in lut.tolist()} - have - {BACKGROUND}):
            try:
                extra += self.bank.sample(per_class, generator=self.generator, classes=[vocab_id])
            except ValueError:  # the bank holds no sample of this class
                continue
        return extra

    def bank_candidates(self, lut: Tensor, inverse: Tensor) -> list[Tensor]:
        """Per downstream class (classification) or overall (others): usable bank rows.

        Args:
            lut: int64 [C] vocabulary id per downstream class.
            inverse: int64 [67] downstream class per vocabulary id (-1: none).

        Returns:
            Row indices (CPU int64) of the bank cache.
        """
        if 'bank' not in self._candidates:
            pool = self.bank_pool
            if pool is None:
                found: list[Tensor] = []
            elif self.task == 'detection':  # samples generated from boxes keep them exactly
                found = [usable_rows(pool.boxes or [], inverse)]
            elif self.task == 'segmentation':
                inverse = inverse.to(pool.counts.device)
                unmapped = ((pool.counts > 0) & (inverse < 0)[None]).any(1)
                found = [(~unmapped).nonzero().flatten().cpu()]
            elif self.class_rule == 'contains':
                found = _exclusive_rows(pool, lut.to(pool.counts.device))
            else:
                found = [_rows_for(pool, int(v), self.class_rule) for v in lut]
            self._candidates['bank'] = found
        return self._candidates['bank']

    def layout_candidates(self, lut: Tensor) -> list[Tensor]:
        """Per downstream class: layout rows containing its vocabulary id.

        Args:
            lut: int64 [C] vocabulary id per downstream class.

        Returns:
            Row indices (CPU int64) of the layout cache, one tensor per class.
        """
        if 'layout' not in self._candidates:
            pool = self.layout_pool
            self._candidates['layout'] = [
                _rows_for(pool, int(v), 'contains')
                if pool is not None
                else torch.empty(0, dtype=torch.long)
                for v in lut
            ]
        return self._candidates['layout']

    def pick(self, rows: Tensor) -> int | None:
        """One of ``rows`` drawn at random, or None when there is none."""
        if not len(rows):
            return None
        return int(rows[int(torch.randint(len(rows), (1,), generator=self.generator))])


def _exclusive_rows(pool: Pool, lut: Tensor) -> list[Tensor]:
    """Per class, rows containing its id where no other class's id has more pixels.

    Every row stands for one class at most, so one image is never handed out as two.
    """
    counts = pool.counts[:, lut] * (lut != BACKGROUND)[None]  # [N, C] pixels per class
    best, owner = counts.max(1)  # ties: the first class, as the inverse map decides
    return [((owner == c) & (best > 0)).nonzero().flatten().cpu() for c in range(len(lut))]


def _rows_for(pool: Pool, vocab_id: int, rule: str) -> Tensor:
    """Rows of ``pool`` that contain (or are dominated by) ``vocab_id``."""
    if vocab_id == BACKGROUND:
        return torch.empty(0, dtype=torch.long)
    ok = pool.counts[:, vocab_id] > 0
    if rule == 'dominant':
        ok &= pool.counts[:, 1:].argmax(1) + 1 == vocab_id
    return ok.nonzero().flatten().cpu()


__all__ = (
    'BankLike',
    'ClassRule',
    'Pool',
    'SamplePools',
    'Source',
    'SynthesizerLoader',
    'Task',
    'check_sources',
)
