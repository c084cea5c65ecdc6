# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Synthetic change pairs for TorchGeo's change detection: new buildings, exact change masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from torchgeo_earthsynth.bank.change_pairs import ChangePairBank
from torchgeo_earthsynth.datasets import add_buildings
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer
from torchgeo_earthsynth.vocabulary import prompt_from_mask

from .synthetic_callback import attach
from .synthetic_generation import ready_synthesizer
from .synthetic_loader import SynthesizerLoader

__all__ = ('SyntheticChangePairs', 'fill_change_bank', 'make_change_pairs')


def _new_buildings(mask: Tensor, seed: int, buildings: tuple[int, int]) -> np.ndarray:
    """``mask`` with new buildings; redrawn (up to 8 times) while they land on nothing new."""
    layout = mask.cpu().numpy().astype(np.uint8)
    rng = np.random.default_rng([seed, 28])
    for _ in range(8):  # a draw may fall on water or on buildings already there
        edited = add_buildings(rng, layout, int(rng.integers(buildings[0], buildings[1] + 1)))
        if (edited != layout).any():
            break
    return edited


def make_change_pairs(
    synthesizer: Synthesizer,
    before: Tensor,
    seeds: Sequence[int],
    masks: Tensor | None = None,
    buildings: tuple[int, int] = (1, 3),
) -> tuple[Tensor, Tensor]:
    """From real "before" images, "after" images that gained buildings, and the change mask.

    Each image's class mask (background where unknown, as for LEVIR-CD, which has none) gets
    new buildings (:func:`~torchgeo_earthsynth.datasets.add_buildings`); the synthesizer's
    in-painting (a mask ControlNet's) generates them inside the edited region only and keeps
    every other pixel bit for bit, so the change mask is exactly the edited region. Buildings
    that would change nothing (all on water or on buildings) are redrawn, up to 8 times: only
    a scene with no land left keeps an empty change mask.

    Args:
        synthesizer: a mask-ControlNet synthesizer that takes ``image`` + ``inpaint_mask``.
        before: float [B, 3, H, W] in 0..255.
        seeds: one seed per image (its buildings and its sample).
        masks: int [B, H, W] vocabulary ids of ``before`` (None: all background).
        buildings: how many buildings to add, at least and at most.

    Returns:
        ``pairs`` float [B, 2, 3, H, W] (before, after) and ``change`` bool [B, H, W].

    Raises:
        ValueError: if the synthesizer cannot in-paint from a mask, or shapes do not fit.
    """
    if not (synthesizer.takes('mask') and synthesizer.takes('inpaint_mask')):
        raise ValueError(
            'make_change_pairs needs a mask ControlNet that in-paints (takes mask, image and '
            f'inpaint_mask); this one takes {sorted(synthesizer.accepts)}'
        )
    count, height, width = len(before), int(before.shape[-2]), int(before.shape[-1])
    if before.ndim != 4 or before.shape[1] != 3 or len(seeds) != count:
        raise ValueError(
            f'before: expected [{len(seeds)}, 3, H, W] for {len(seeds)} seeds, '
            f'got {list(before.shape)}'
        )
    if masks is None:
        masks = torch.zeros(count, height, width, dtype=torch.long)
    edited = []
    for mask, seed in zip(masks, seeds):
        edited.append(torch.from_numpy(_new_buildings(mask, int(seed), buildings)))
    after_masks = torch.stack(edited).long()
    change = after_masks != masks.cpu().long()
    prompts = [prompt_from_mask(mask) for mask in after_masks]
    # no seam: every changed pixel is generated (a 4 px fade would half-erase small buildings)
    after = synthesizer.generate(
        after_masks, prompts, list(seeds), image=before.float(), inpaint_mask=change, inpaint_seam=0
    )
    return torch.stack([before.float().cpu(), after.cpu()], dim=1), change


def fill_change_bank(
    synthesizer: Synthesizer,
    before: Tensor,
    bank: ChangePairBank,
    masks: Tensor | None = None,
    batch_size: int = 8,
    seed: int = 0,
    buildings: tuple[int, int] = (1, 3),
    progress: bool = True,
) -> int:
    """Fill a bank with change pairs from real "before" images (:func:`make_change_pairs`).

    Image ``i`` is stored under key ``i`` with seed ``seed + i``; images whose key the bank
    already holds are skipped, so a stopped fill resumes where it stopped.

    Args:
        synthesizer: a mask-ControlNet synthesizer that in-paints.
        before: float [N, 3, H, W] in 0..255.
        bank: where the pairs go.
        masks: int [N, H, W] vocabulary ids of ``before`` (None: all background).
        batch_size: images generated at once.
        seed: seed of the first image (its buildings and its sample).
        buildings: how many buildings a pair gains, at least and at most.
        progress: show a progress bar.

    Returns:
        The number of pairs added (the skipped ones not counted).
    """
    done = bank.done_keys()
    todo = [i for i in range(len(before)) if str(i) not in done]
    added = 0
    with tqdm(total=len(todo), desc='change pairs', unit='pair', disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            rows = todo[start : start + batch_size]
            pairs, change = make_change_pairs(
                synthesizer,
                before[rows],
                [seed + i for i in rows],
                masks=None if masks is None else masks[rows],
                buildings=buildings,
            )
            added += bank.add(pairs, change, keys=rows)
            bar.update(len(rows))
    return added


class SyntheticChangePairs(nn.Module):
    """Synthetic pairs in a change-detection batch (TorchGeo's ``ChangeDetectionTask`` loop).

    A batch transform for LEVIR-CD-style batches: ``image`` [B, 2, 3, H, W] (before, after)
    in 0..255 and ``mask`` [B, 1, H, W] (or [B, H, W]) with ``change_value`` where a
    building appeared. Each row is replaced, with probability ``probability``, by a
    synthetic pair: online, from its own "before" image (:func:`make_change_pairs`): the
    same place with new buildings in-painted, and their exact change mask in the dataset's
    encoding; or drawn from a :class:`~torchgeo_earthsynth.bank.ChangePairBank` filled
    beforehand (:func:`fill_change_bank`). Put it in a datamodule's ``train_aug`` slot with
    :meth:`attach`, so batches are augmented raw and then normalised as before.
    ``generated`` and ``drawn`` count synthetic rows (:attr:`stats`).

    .. versionadded:: 0.4
    """

    def __init__(
        self,
        synthesizer: Synthesizer | SynthesizerLoader | None = None,
        probability: float = 0.5,
        buildings: tuple[int, int] = (1, 3),
        change_value: int = 1,
        seed: int = 0,
        then: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        bank: ChangePairBank | str | Path | None = None,
    ) -> None:
        """Initialize a new SyntheticChangePairs instance.

        Args:
            synthesizer: a mask-ControlNet synthesizer that in-paints (or a
                :class:`SynthesizerLoader`, built on the first batch: configs); or ``bank``.
            probability: share of rows replaced by a synthetic pair.
            buildings: how many buildings a synthetic pair gains, at least and at most.
            change_value: the mask value of a changed pixel (LEVIR-CD: 1).
            seed: seed of which rows are replaced and of the pairs.
            then: the datamodule's own augmentation, applied after (set by :meth:`attach`).
            bank: draw stored pairs instead of generating them (a bank or its folder).

        Raises:
            ValueError: if ``probability`` is not in [0, 1], ``buildings`` is not ordered,
                or not exactly one of ``synthesizer`` and ``bank`` is given.
        """
        super().__init__()
        if not 0 <= probability <= 1:
            raise ValueError(f'probability must be in [0, 1], got {probability}')
        if not 1 <= buildings[0] <= buildings[1]:
            raise ValueError(f'buildings must be (least >= 1, most >= least), got {buildings}')
        if (synthesizer is None) == (bank is None):
            raise ValueError(
                'SyntheticChangePairs needs one source: synthesizer (pairs generated online) '
                'or bank (a ChangePairBank or its folder)'
            )
        self.synthesizer = synthesizer
        self.bank = ChangePairBank(bank) if isinstance(bank, str | Path) else bank
        self.probability, self.buildings = probability, buildings
        self.change_value, self.seed, self.then = change_value, seed, then
        self.generated = self.drawn = 0
        self._calls = 0

    @property
    def stats(self) -> dict[str, int]:
        """Counters for reports: batches seen, pairs generated and pairs drawn from the bank."""
        return {'batches': self._calls, 'generated': self.generated, 'drawn': self.drawn}

    def attach(self, datamodule: Any) -> None:
        """Put this transform into a TorchGeo datamodule's ``train_aug`` slot (once)."""
        attach(datamodule, self)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Replace the chosen rows by synthetic pairs, then apply ``then``.

        Raises:
            ValueError: if the batch is not [B, 2, 3, H, W] images with a change mask.
        """
        image, mask = batch.get('image'), batch.get('mask')
        if image is None or mask is None or image.ndim != 5 or image.shape[1:3] != (2, 3):
            got = None if image is None else list(image.shape)
            raise ValueError(
                'SyntheticChangePairs needs batches with image [B, 2, 3, H, W] (before, after; '
                f'0..255) and mask [B, 1, H, W], got image {got}'
            )
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._calls)
        self._calls += 1
        rows = torch.nonzero(torch.rand(len(image), generator=generator) < self.probability)
        rows = rows.flatten()
        if len(rows):
            pairs, change = self._pairs(image[rows, 0], generator)
            image = image.clone()
            image[rows] = pairs.to(image.device, image.dtype)
            label = (change * self.change_value).to(mask.device, mask.dtype)
            mask = mask.clone()
            mask[rows] = label[:, None] if mask.ndim == 4 else label
            batch = {**batch, 'image': image, 'mask': mask}
        return self.then(batch) if self.then is not None else batch

    def _pairs(self, before: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Synthetic pairs for ``len(before)`` rows: generated from them, or drawn."""
        if self.bank is None:
            assert self.synthesizer is not None
            seeds = [self.seed * 1_000_003 + self.generated + i for i in range(len(before))]
            synthesizer = ready_synthesizer(self.synthesizer, before.device)
            made = make_change_pairs(synthesizer, before, seeds, buildings=self.buildings)
            self.generated += len(before)
            return made
        pairs, change = self.bank.sample(len(before), generator)
        if pairs.shape[-2:] != before.shape[-2:]:
            raise ValueError(
                f'{self.bank!r} holds {tuple(pairs.shape[-2:])} px pairs; this batch is '
                f'{tuple(before.shape[-2:])} px'
            )
        self.drawn += len(before)
        return pairs, change
