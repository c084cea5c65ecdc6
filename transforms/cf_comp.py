# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""CF-Comp: counterfactual composition of training batches (region paste and 2x2 tiling)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchgeo_earthsynth.origins import SampleOrigin
from torchgeo_earthsynth.seeding import seed_for_rank
from torchgeo_earthsynth.vocabulary import BACKGROUND, NUM_CLASSES, class_histogram, prompt_from_ids

#: Keys CF-Comp reads and rewrites; every other key passes through untouched.
REQUIRED_KEYS: Final[tuple[str, ...]] = ('image', 'mask', 'prompt', 'categories', 'source')

#: Codes of :attr:`CompositionPlan.op`.
REAL: Final = SampleOrigin.REAL
PASTE: Final = SampleOrigin.PASTE
TILE: Final = SampleOrigin.TILE


@dataclass(frozen=True)
class CompositionPlan:
    """What :class:`CounterfactualComposition` did to each sample of a batch (CPU tensors).

    Attributes:
        op: int64 [B]: :data:`REAL` (kept), :data:`PASTE` or :data:`TILE`.
        donors: int64 [B, num_regions]: batch index of the donor of each pasted region, in
            paste order (later regions are drawn over earlier ones); -1 where unused.
        classes: int64 [B, num_regions]: vocabulary id of each pasted region; -1 where unused.
        tiles: int64 [B, 4]: batch indices of the top-left, top-right, bottom-left and
            bottom-right tiles; -1 unless tiled.

    .. versionadded:: 0.1
    """

    op: Tensor
    donors: Tensor
    classes: Tensor
    tiles: Tensor


class CounterfactualComposition(nn.Module):
    """CF-Comp: turn a share of each training batch into "unrealistic but logical" scenes.

    Applied to collated batches on the device (``batch = cf_comp(batch)``). Each batch has
    ``round(B * (1 - real_share))`` samples (stochastically rounded) composed from the batch
    itself, by one of two operations:

    * **region paste** (probability ``1 - tile_prob``): ``num_regions`` times, a donor is drawn
      and the pixels of one of its non-background classes (its category region) are copied,
      image and mask, into the recipient at the same positions;
    * **2x2 tiling** (probability ``tile_prob``): the recipient and three donors are downscaled
      by two (image by area averaging, mask by nearest neighbour) and tiled in a random order.

    Donors are drawn from the rest of the batch with probability proportional to
    ``rarity ** rarity_weight * exp(source_weight * cross_source + scene_weight * scene_distance)``:

    * ``rarity``: inverse frequency of the donor's rarest class (non-background for paste), the
      frequency being the share of samples containing the class, counted over every batch seen
      so far (cumulative, or an EMA with ``frequency_momentum``). The pasted class is picked in
      the donor with probability proportional to ``rarity ** rarity_weight`` too, so rare classes
      are pasted more often;
    * ``cross_source``: 1 when the donor's ``source`` differs from the recipient's, else 0;
    * ``scene_distance``: cosine distance between the two masks' class-area histograms
      (land-cover mix), in [0, 1].

    A weight of 0 switches its axis off (uniform); a negative one reverses the preference.

    After composing, ``mask`` and ``image`` hold the new scene, ``categories`` is its multi-hot
    vector and ``prompt`` the EarthSynth template prompt of the ids in the new mask, so every
    id in a composed mask is named in its prompt and no other. ``source`` of a composed sample
    is ``'composed'`` (or the recipient's own with ``composed_source='recipient'``). Any other key
    passes through untouched: for a composed sample it still describes the recipient.

    With ``real_share=1`` the input batch is returned as is, which reproduces plain ControlNet
    training. Random draws come from the module's own seeded CPU :class:`torch.Generator`, so a
    seed gives the same compositions on any device; pixel work stays on the batch's device.

    .. versionadded:: 0.1
    """

    ops: ClassVar[tuple[str, ...]] = ('real', 'paste', 'tile')

    class_frequency: Tensor
    samples_seen: Tensor

    def __init__(
        self,
        real_share: float = 0.5,
        tile_prob: float = 0.25,
        rarity_weight: float = 1.0,
        source_weight: float = 1.0,
        scene_weight: float = 1.0,
        num_regions: int = 1,
        frequency_momentum: float | None = None,
        composed_source: Literal['composed', 'recipient'] = 'composed',
        seed: int | None = None,
    ) -> None:
        """Initialize a new CounterfactualComposition instance.

        Args:
            real_share: fraction of each batch kept real, in [0, 1]; 1 turns CF-Comp off.
            tile_prob: probability that a composed sample is a 2x2 tiling rather than a
                region paste, in [0, 1].
            rarity_weight: exponent of the inverse class frequency in donor and region choice.
            source_weight: log-odds bonus of a donor from a different source than the recipient.
            scene_weight: log-odds bonus per unit of cosine distance between land-cover mixes.
            num_regions: category regions pasted into each region-paste recipient, each from
                its own donor while the batch has enough.
            frequency_momentum: None to count class frequencies over every batch seen; else the
                EMA momentum in [0, 1) (weight of the old estimate) for drifting data.
            composed_source: ``source`` of a composed sample: ``'composed'`` or the recipient's.
            seed: seed of the generator; None draws a random one.

        Raises:
            ValueError: if an argument is out of range.
        """
        super().__init__()
        for name, value in (('real_share', real_share), ('tile_prob', tile_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        for name, value in (
            ('rarity_weight', rarity_weight),
            ('source_weight', source_weight),
            ('scene_weight', scene_weight),
        ):
            if not math.isfinite(value):
                raise ValueError(f'{name} must be a finite number, got {value}')
        if num_regions < 1:
            raise ValueError(f'num_regions must be >= 1, got {num_regions}')
        if frequency_momentum is not None and not 0.0 <= frequency_momentum < 1.0:
            raise ValueError(
                f'frequency_momentum must be None or in [0, 1), got {frequency_momentum}'
            )
        if composed_source not in ('composed', 'recipient'):
            raise ValueError(
                f"composed_source must be 'composed' or 'recipient', got {composed_source!r}"
            )
        self.real_share = real_share
        self.tile_prob = tile_prob
        self.rarity_weight = rarity_weight
        self.source_weight = source_weight
        self.scene_weight = scene_weight
        self.num_regions = num_regions
        self.frequency_momentum = frequency_momentum
        self.composed_source = composed_source
        self.seed = seed
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self._seeded_rank = 0
        # Share of samples containing each class, and how many samples it was counted over.
        self.register_buffer('class_frequency', torch.zeros(NUM_CLASSES, dtype=torch.float64))
        self.register_buffer('samples_seen', torch.zeros((), dtype=torch.float64))

    def extra_repr(self) -> str:
        """The hyperparameters, for ``print(module)``."""
        return (
            f'real_share={self.real_share}, tile_prob={self.tile_prob}, '
            f'rarity_weight={self.rarity_weight}, source_weight={self.source_weight}, '
            f'scene_weight={self.scene_weight}, num_regions={self.num_regions}, '
            f'frequency_momentum={self.frequency_momentum}, '
            f'composed_source={self.composed_source!r}, seed={self.seed}'
        )

    # ------------------------------------------------------------------ public API
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Compose a share of the batch.

        Args:
            batch: a collated sample batch: ``image`` float [B, C, H, W], ``mask`` int64
                [B, H, W] vocabulary ids, ``prompt`` list[str], ``categories`` float [B, 67],
                ``source`` list[str], any other keys.

        Returns:
            The batch with composed samples (the input object itself when none is composed).

        Raises:
            ValueError: if the batch is missing a key or its fields disagree in shape.
        """
        return self.compose(batch)[0]

    @torch.no_grad()
    def compose(self, batch: dict[str, Any]) -> tuple[dict[str, Any], CompositionPlan]:
        """Compose a share of the batch and say how.

        Args:
            batch: as for :meth:`forward`.

        Returns:
            The new batch (the input object itself when none is composed) and its plan.

        Raises:
            ValueError: if the batch is missing a key or its fields disagree in shape.
        """
        image, mask, categories = self._check(batch)
        self._update_frequency(categories)
        plan = self._plan(batch, mask)
        composed = plan.op != REAL
        if not bool(composed.any()):
            return batch, plan

        out_image, out_mask = image.clone(), mask.clone()
        self._paste(image, mask, out_image, out_mask, plan)
        self._tile(image, mask, out_image, out_mask, plan)

        present = class_histogram(out_mask) > 0
        out_categories = categories.clone()
        rows = composed.nonzero().flatten()
        out_categories[rows.to(categories.device)] = present[rows.to(present.device)].to(
            categories.dtype
        )
        present_cpu = present.cpu()
        prompts = list(batch['prompt'])
        sources = list(batch['source'])
        for i in rows.tolist():
            prompts[i] = prompt_from_ids(present_cpu[i].nonzero().flatten().tolist())
            if self.composed_source == 'composed':
                sources[i] = 'composed'
        result = dict(batch)
        result.update(
            image=out_image,
            mask=out_mask,
            categories=out_categories,
            prompt=prompts,
            source=sources,
        )
        return result, plan

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _check(batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Validate the batch; return image, mask and categories."""
        if not isinstance(batch, Mapping):
            raise ValueError(f'CounterfactualComposition expects a dict batch, got {type(batch)}')
        missing = [key for key in REQUIRED_KEYS if key not in batch]
        if missing:
            raise ValueError(
                f'CounterfactualComposition: batch is missing key(s) {missing}; expected '
                f'{list(REQUIRED_KEYS)} (a collated EarthSynth180K batch)'
            )
        image, mask, categories = batch['image'], batch['mask'], batch['categories']
        if not isinstance(image, Tensor) or image.ndim != 4:
            raise ValueError(
                f"CounterfactualComposition: batch['image'] must be a [B, C, H, W] tensor, got "
                f'{_describe(image)}'
            )
        b, _, h, w = image.shape
        if not isinstance(mask, Tensor) or mask.shape != (b, h, w) or mask.is_floating_point():
            raise ValueError(
                f"CounterfactualComposition: batch['mask'] must be an integer tensor of shape "
                f'[{b}, {h}, {w}] matching the image, got {_describe(mask)}'
            )
        if not isinstance(categories, Tensor) or categories.shape != (b, NUM_CLASSES):
            raise ValueError(
                f"CounterfactualComposition: batch['categories'] must be a tensor of shape "
                f'[{b}, {NUM_CLASSES}], got {_describe(categories)}'
            )
        for key in ('prompt', 'source'):
            value = batch[key]
            if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != b:
                raise ValueError(
                    f"CounterfactualComposition: batch['{key}'] must be a list of {b} str, got "
                    f'{_describe(value)}'
                )
        if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= NUM_CLASSES):
            raise ValueError(
                f"CounterfactualComposition: batch['mask'] ids must be in [0, {NUM_CLASSES - 1}], "
                f'got [{int(mask.min())}, {int(mask.max())}]'
            )
        return image, mask, categories

    def _update_frequency(self, categories: Tensor) -> None:
        """Fold the batch's class presence into the running class frequency."""
        present = (categories.detach() > 0.5).to(self.class_frequency)
        batch_mean = present.mean(0)
        b = float(present.shape[0])
        if self.frequency_momentum is None or float(self.samples_seen) == 0.0:
            seen = self.samples_seen
            self.class_frequency.mul_(seen / (seen + b)).add_(batch_mean * (b / (seen + b)))
        else:
            m = self.frequency_momentum
            self.class_frequency.mul_(m).add_(batch_mean, alpha=1.0 - m)
        self.samples_seen.add_(b)

    def _plan(self, batch: Mapping[str, Any], mask: Tensor) -> CompositionPlan:
        """Draw which samples are composed, how, and from which donors (on the CPU)."""
        b = mask.shape[0]
        self._seeded_rank = seed_for_rank(self.generator, self.seed, self._seeded_rank)
        g = self.generator
        op = torch.zeros(b, dtype=torch.long)
        donors = torch.full((b, self.num_regions), -1, dtype=torch.long)
        classes = torch.full((b, self.num_regions), -1, dtype=torch.long)
        tiles = torch.full((b, 4), -1, dtype=torch.long)
        expected = b * (1.0 - self.real_share)
        count = math.floor(expected)
        if expected - count > 0 and float(torch.rand((), generator=g)) < expected - count:
            count += 1
        if b < 2 or count == 0:
            return CompositionPlan(op, donors, classes, tiles)

        chosen = torch.randperm(b, generator=g)[:count]
        tile = torch.rand(count, generator=g) < self.tile_prob
        op[chosen] = torch.where(tile, TILE, PASTE)

        hist = class_histogram(mask).cpu().double()
        present = hist > 0
        # Log-rarity of each class present in each sample; -inf where absent.
        rarity = -torch.log(self.class_frequency.detach().cpu().clamp_min(1e-12))
        class_logit = torch.where(
            present, self.rarity_weight * rarity, torch.tensor(-math.inf, dtype=torch.float64)
        )
        sources = [str(s) for s in batch['source']]
        codes = torch.tensor([sorted(set(sources)).index(s) for s in sources])
        cross = (codes[:, None] != codes[None, :]).double()
        unit = F.normalize(hist, dim=1)
        distance = (1.0 - unit @ unit.T).clamp(0.0, 1.0)
        pair = self.source_weight * cross + self.scene_weight * distance
        pair.fill_diagonal_(-math.inf)
        paste_logits = pair + class_logit[:, BACKGROUND + 1 :].amax(1)[None, :]
        tile_logits = pair + class_logit.amax(1)[None, :]

        # A recipient with no donor holding a non-background class gets tiled instead.
        stuck = (op == PASTE) & ~torch.isfinite(paste_logits).any(1)
        op[stuck] = TILE

        pasted = (op == PASTE).nonzero().flatten()
        if len(pasted):
            logits = paste_logits[pasted].clone()
            rows = torch.arange(len(pasted))
            for r in range(self.num_regions):
                donor = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).flatten()
                region = class_logit[donor, BACKGROUND + 1 :]
                cls = torch.multinomial(torch.softmax(region, 1), 1, generator=g).flatten()
                donors[pasted, r] = donor
                classes[pasted, r] = cls + BACKGROUND + 1
                # Next region from another donor, where the batch has one.
                spare = torch.isfinite(logits).sum(1) > 1
                logits[rows[spare], donor[spare]] = -math.inf

        tiled = (op == TILE).nonzero().flatten()
        if len(tiled):
            probs = torch.softmax(tile_logits[tiled], 1)
            # Without replacement needs three donors of non-zero (non-underflowed) probability.
            replace = b - 1 < 3 or int((probs > 0).sum(1).min()) < 3
            others = torch.multinomial(probs, 3, replacement=replace, generator=g)
            members = torch.cat([tiled[:, None], others], 1)
            order = torch.argsort(torch.rand(len(tiled), 4, generator=g), dim=1)
            tiles[tiled] = torch.gather(members, 1, order)
        return CompositionPlan(op, donors, classes, tiles)

    @staticmethod
    def _paste(
        image: Tensor, mask: Tensor, out_image: Tensor, out_mask: Tensor, plan: CompositionPlan
    ) -> None:
        """Copy the planned category regions of donors into recipients, in place."""
        device = mask.device
        recipients = (plan.op == PASTE).nonzero().flatten()
        if not len(recipients):
            return
        for r in range(plan.donors.shape[1]):
            donor = plan.donors[recipients, r].to(device)
            cls = plan.classes[recipients, r].to(device)
            rec = recipients.to(device)
            region = mask[donor] == cls[:, None, None]
            out_mask[rec] = torch.where(region, mask[donor], out_mask[rec])
            out_image[rec] = torch.where(region[:, None], image[donor], out_image[rec])

    @staticmethod
    def _tile(
        image: Tensor, mask: Tensor, out_image: Tensor, out_mask: Tensor, plan: CompositionPlan
    ) -> None:
        """Write the planned 2x2 tilings, in place."""
        device = mask.device
        recipients = (plan.op == TILE).nonzero().flatten()
        if not len(recipients):
            return
        h, w = mask.shape[-2:]
        top, left = (h + 1) // 2, (w + 1) // 2
        boxes = ((0, top, 0, left), (0, top, left, w), (top, h, 0, left), (top, h, left, w))
        rec = recipients.to(device)
        for q, (y0, y1, x0, x1) in enumerate(boxes):
            if y1 == y0 or x1 == x0:
                continue
            members = plan.tiles[recipients, q].to(device)
            size = (y1 - y0, x1 - x0)
            small = F.interpolate(image[members].float(), size=size, mode='area')
            out_image[rec, :, y0:y1, x0:x1] = small.to(out_image.dtype)
            labels = F.interpolate(mask[members, None].float(), size=size, mode='nearest-exact')
            out_mask[rec, y0:y1, x0:x1] = labels[:, 0].round().to(out_mask.dtype)


def _describe(value: Any) -> str:
    """Short description of a batch field for error messages."""
    if isinstance(value, Tensor):
        return f'{value.dtype} tensor of shape {list(value.shape)}'
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f'{type(value).__name__} of length {len(value)}'
    return type(value).__name__


__all__ = ('PASTE', 'REAL', 'TILE', 'CompositionPlan', 'CounterfactualComposition')
