# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The per-batch draws of :class:`~.synthetic_augmentation.SyntheticAugmentation`.

Which rows get a synthetic sample, whether it comes from the bank or is generated, and how
the rows are fetched, generated, filtered and put into the batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from torchgeo_earthsynth.encodings.registry import DatasetEncoding
from torchgeo_earthsynth.rfilter.protocol import SampleFilter
from torchgeo_earthsynth.seeding import seed_for_rank
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer
from torchgeo_earthsynth.vocabulary import BACKGROUND, prompt_from_ids

from .synthetic_bands import BandMap, fit_sources
from .synthetic_boxes import downstream_label, vocabulary_boxes
from .synthetic_generation import (
    bank_generated,
    filter_generated,
    generate_on_device,
    ready_synthesizer,
)
from .synthetic_geo import GeoMetadata
from .synthetic_labels import (
    LabelTables,
    check_batch,
    online_conditions,
    present_prompts,
    segmentation_label,
)
from .synthetic_rows import (
    BANK,
    GENERATED,
    Batch,
    SyntheticPlan,
    SyntheticRows,
    insert_rows,
)
from .synthetic_scale import check_pixels, synthetic_gain
from .synthetic_sources import (
    BankLike,
    SamplePools,
    SynthesizerLoader,
    Task,
    resize_images,
    resize_masks,
)

#: ``(row, origin, online condition or None, bank index or None)`` of one chosen row.
Pick = tuple[int, int, Tensor | None, int | None]


class SyntheticDraws(nn.Module):
    """Draw, make and insert the synthetic rows of a batch (the base of SyntheticAugmentation).

    Its options, bound classes and tables are set by
    :class:`~.synthetic_augmentation.SyntheticAugmentation`, which documents them.

    .. versionadded:: 0.1
    """

    task: Task
    source: Literal['online', 'bank', 'both']
    p: float
    mode: Literal['replace', 'append']
    synthesizer: Synthesizer | SynthesizerLoader | None
    bank: BankLike | None
    rfilter: SampleFilter | None
    cf_comp: nn.Module | None
    image_scale: float | None
    bank_share: float
    cache_refresh: int | None
    add_to_bank: bool
    seed: int
    geo: GeoMetadata
    generator: torch.Generator
    stats: dict[str, int]
    last_plan: SyntheticPlan | None
    classes: tuple[str, ...] | None
    encoding: DatasetEncoding | None
    pools: SamplePools
    tables: LabelTables
    band_map: BandMap | None
    _bands_fitted: bool
    lut: Tensor
    inverse: Tensor
    _seeded_rank: int
    _batches: int

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
        assert self.encoding is not None
        if not self._bands_fitted:
            self.fit_bands()
        channels = 3 if self.band_map is None else len(self.band_map)
        image = check_batch(batch, self.task, self.classes, self.encoding.rgb_path, channels)
        if self._batches == 0:
            mapped = self.band_map if self.source == 'online' else None
            gain = mapped.gain if mapped is not None else self._rgb_gain()
            check_pixels(image, self.encoding, gain)
        b, device = image.shape[0], image.device
        size = (int(image.shape[-2]), int(image.shape[-1]))
        self._seeded_rank = seed_for_rank(self.generator, self.seed, self._seeded_rank)
        self.stats['seen'] += b
        refresh = self.cache_refresh is not None and self._batches % self.cache_refresh == 0
        if self.pools.needed and (self._batches == 0 or refresh):
            self.pools.load(size, device, self.lut, self.classes, refresh_bank=self._batches > 0)
        self._batches += 1

        chosen = (torch.rand(b, generator=self.generator) < self.p).nonzero().flatten().tolist()
        from_bank = torch.rand(b, generator=self.generator) < self.bank_share
        lut = self.tables.on(device)[0]
        picks: list[Pick] = []
        online = None
        if self.source != 'bank' and chosen:
            online = online_conditions(batch, self.task, lut, size, self.cf_comp)
        for row in chosen:
            origin = self._choose_origin(batch, row, bool(from_bank[row]), online)
            if origin is None:
                self.stats['unavailable'] += 1
            else:
                picks.append((row, *origin))
        return self._assemble(batch, picks, size, device)

    def fit_bands(self, datamodule: Any | None = None) -> None:
        """Check the sources against the dataset and set :attr:`band_map`.

        Called by :meth:`~.synthetic_augmentation.SyntheticAugmentation.fit_to`, else on
        the first batch (with the dataset's default bands).

        Args:
            datamodule: the datamodule, if attached.

        Raises:
            ValueError: as for
                :meth:`~.synthetic_augmentation.SyntheticAugmentation.fit_to`.
        """
        assert self.encoding is not None
        self.band_map = fit_sources(
            self.encoding,
            self.synthesizer,
            self.source,
            self.image_scale,
            self.add_to_bank,
            datamodule,
        )
        self._bands_fitted = True

    def _choose_origin(
        self, batch: Batch, row: int, bank_first: bool, online: Tensor | None
    ) -> tuple[int, Tensor | None, int | None] | None:
        """``(origin, online condition, bank index)`` for one chosen row, or None."""
        label = int(batch['label'][row]) if self.task == 'classification' else 0

        def bank() -> tuple[int, Tensor | None, int | None] | None:
            if self.source == 'online':
                return None
            candidates = self.pools.bank_candidates(self.lut, self.inverse)
            index = self.pools.pick(candidates[label] if candidates else torch.empty(0))
            return None if index is None else (BANK, None, index)

        def generate() -> tuple[int, Tensor | None, int | None] | None:
            if self.source == 'bank':
                return None
            if self.task != 'classification':
                assert online is not None
                return GENERATED, online[row], None
            vocab_id = int(self.lut[label])
            index = self.pools.pick(self.pools.layout_candidates(self.lut)[label])
            if index is None:
                return None
            assert self.pools.layout_pool is not None
            layout = self.pools.layout_pool.mask[index].long()
            return GENERATED, torch.where(layout == vocab_id, vocab_id, BACKGROUND), None

        if self.source == 'bank' or (self.source == 'both' and bank_first):
            return bank() or generate()
        return generate() or bank()

    def _assemble(
        self, batch: Batch, picks: list[Pick], size: tuple[int, int], device: torch.device
    ) -> tuple[Batch, SyntheticPlan]:
        """Fetch the bank rows, generate the others, and put them into the batch."""
        synthetic = SyntheticRows([], [], [], [], [])
        bank_picks = [(row, index) for row, origin, _, index in picks if origin == BANK]
        if bank_picks:
            self._add_bank_rows(synthetic, bank_picks, size, device)
        generated = [(row, cond) for row, origin, cond, _ in picks if origin == GENERATED]
        if generated:
            self._add_generated_rows(synthetic, batch, generated, device)
        synthetic.images = [
            self._to_pixels(image, origin)
            for image, origin in zip(synthetic.images, synthetic.origins)
        ]
        self.stats['replaced' if self.mode == 'replace' else 'appended'] += len(synthetic.rows)
        out, self.last_plan = insert_rows(
            batch, synthetic, self.task, self.mode, self.lut, size, device
        )
        return out, self.last_plan

    def _rgb_gain(self) -> float:
        """The factor taking synthetic 0..255 RGB into the dataset's pixel scale."""
        return synthetic_gain(self.encoding, self.image_scale) if self.encoding else 1.0

    def _to_pixels(self, image: Tensor, origin: int) -> Tensor:
        """One synthetic row's image [C, H, W] 0..255 in the dataset's bands and scale."""
        if origin == GENERATED and self.band_map is not None:
            return self.band_map(image)
        if image.shape[0] != 3:
            raise ValueError(
                f'the generator returned {image.shape[0]} bands, but was taken for RGB 0..255 '
                "(its 'bands' were not known when the augmentation was fitted: build a "
                'SynthesizerLoader with .get() before attach())'
            )
        gain = self._rgb_gain()
        return image * gain if gain != 1.0 else image

    def _add_bank_rows(
        self,
        synthetic: SyntheticRows,
        picks: list[tuple[int, int | None]],
        size: tuple[int, int],
        device: torch.device,
    ) -> None:
        pool = self.pools.bank_pool
        assert pool is not None and pool.image is not None
        index = torch.tensor([i for _, i in picks], device=device)
        bank_images = resize_images(pool.image[index].float(), size)
        bank_masks = resize_masks(pool.mask[index].long(), size)
        inverse = self.tables.on(device)[1]
        bank_labels: Any = inverse[bank_masks]
        if self.task == 'detection':  # the exact boxes the sample was generated from
            pool_size = (int(pool.mask.shape[-2]), int(pool.mask.shape[-1]))
            boxes = pool.boxes or []
            bank_labels = [
                downstream_label(boxes[i], inverse, pool_size, size) for i in index.tolist()
            ]
        for k, (row, _) in enumerate(picks):
            synthetic.add(row, BANK, bank_images[k], bank_masks[k], bank_labels[k])
        self.stats['from_bank'] += len(picks)

    def _add_generated_rows(
        self,
        synthetic: SyntheticRows,
        batch: Batch,
        generated: list[tuple[int, Tensor | None]],
        device: torch.device,
    ) -> None:
        cond = torch.stack([c for _, c in generated if c is not None]).long()
        gen_rows = [row for row, _ in generated]
        if self.task == 'classification':
            prompts = [prompt_from_ids([int(self.lut[int(batch['label'][r])])]) for r in gen_rows]
        else:
            prompts = present_prompts(cond)[0]
        assert self.synthesizer is not None
        synth = ready_synthesizer(self.synthesizer, device)
        metadata = self.geo.for_generator(synth, batch, gen_rows)
        fake = generate_on_device(synth, cond, prompts, self.generator, device, metadata)
        self.stats['generated'] += len(cond)
        keep = filter_generated(self.rfilter, fake, cond, prompts, batch['image'][gen_rows])
        self.stats['dropped_by_filter'] += int((~keep).sum())
        if self.add_to_bank and keep.any():
            boxes = (
                vocabulary_boxes(batch, gen_rows, self.lut) if self.task == 'detection' else None
            )
            added = bank_generated(self.bank, fake, cond, prompts, keep, boxes)
            self.stats['added_to_bank'] += added
        for k, row in enumerate(gen_rows):
            if keep[k]:
                synthetic.add(row, GENERATED, fake[k], cond[k], self._label_of(batch, row, cond[k]))

    def _label_of(self, batch: Batch, row: int, cond: Tensor) -> Tensor | None:
        """The label mask of a generated segmentation sample: exact for its condition."""
        if self.task != 'segmentation':
            return None
        real: Tensor = batch['mask'][row]
        if self.cf_comp is None:
            return real
        lut, _, recomposed = self.tables.on(real.device)
        return segmentation_label(real, cond, lut, recomposed)


__all__ = ('Batch', 'Pick', 'SyntheticDraws')
