# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for CF-Comp (counterfactual composition of training batches)."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.transforms.cf_comp import (
    PASTE,
    REAL,
    TILE,
    CompositionPlan,
    CounterfactualComposition,
)
from torchgeo_earthsynth.vocabulary import (
    CLASS_IDS,
    NUM_CLASSES,
    ids_from_prompt,
    multi_hot,
    prompt_from_mask,
)

C = CLASS_IDS
LAND = (C['grass'], C['pavement'])
#: Object classes of the skewed fake distribution and their chance to appear in a sample.
OBJECTS = {C['building']: 0.6, C['small vehicle']: 0.1, C['storage tank']: 0.03}


def make_batch(
    g: torch.Generator,
    b: int = 8,
    size: int = 16,
    sources: tuple[str, ...] = ('DeepGlobe', 'LoveDA'),
    objects: dict[int, float] | None = None,
) -> dict[str, Any]:
    """A skewed fake batch: a land-cover base, a background strip, rarer object squares."""
    objects = OBJECTS if objects is None else objects
    masks = torch.empty(b, size, size, dtype=torch.long)
    for i in range(b):
        masks[i] = LAND[int(torch.randint(len(LAND), (), generator=g))]
        masks[i, : size // 4] = 0
        for cls, p in objects.items():
            if float(torch.rand((), generator=g)) < p:
                y, x = torch.randint(size - 4, (2,), generator=g).tolist()
                masks[i, y : y + 4, x : x + 4] = cls
    # Distinct pixel values everywhere, so copied pixels can be traced to their origin.
    image = torch.randint(0, 256, (b, 3, size, size), generator=g).float()
    return {
        'image': image,
        'mask': masks,
        'prompt': [prompt_from_mask(m) for m in masks],
        'categories': torch.stack([multi_hot(m) for m in masks]),
        'source': [sources[i % len(sources)] for i in range(b)],
    }


def clone(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else list(v) for k, v in batch.items()}


def assert_consistent(batch: dict[str, Any]) -> None:
    """Every id in each mask is named in its prompt and no other; categories match."""
    for mask, prompt, categories in zip(batch['mask'], batch['prompt'], batch['categories']):
        ids = sorted(int(i) for i in torch.unique(mask) if i != 0)
        assert ids_from_prompt(prompt) == ids
        assert torch.equal(categories, multi_hot(mask))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.mark.parametrize('tile_prob', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('num_regions', [1, 3])
def test_composed_batches_are_consistent(
    gen: torch.Generator, tile_prob: float, num_regions: int
) -> None:
    cf = CounterfactualComposition(
        real_share=0.5, tile_prob=tile_prob, num_regions=num_regions, seed=0
    )
    for _ in range(5):
        batch = make_batch(gen)
        original = clone(batch)
        out, plan = cf.compose(batch)
        assert_consistent(out)
        assert out['image'].dtype == torch.float32 and out['mask'].dtype == torch.int64
        assert out['image'].shape == original['image'].shape
        assert out['categories'].shape == (8, NUM_CLASSES)
        assert int((plan.op != REAL).sum()) == 4
        if tile_prob == 0.0:
            assert set(plan.op.tolist()) <= {REAL, PASTE}
        if tile_prob == 1.0:
            assert set(plan.op.tolist()) <= {REAL, TILE}
        for i, op in enumerate(plan.op.tolist()):
            if op == REAL:
                assert torch.equal(out['image'][i], original['image'][i])
                assert torch.equal(out['mask'][i], original['mask'][i])
                assert out['prompt'][i] == original['prompt'][i]
                assert out['source'][i] == original['source'][i]
            else:
                assert out['source'][i] == 'composed'
        # The input batch is not modified.
        for key, value in original.items():
            assert (
                batch[key] == value if isinstance(value, list) else torch.equal(batch[key], value)
            )


def test_paste_copies_donor_region_exactly(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.0, tile_prob=0.0, seed=1)
    pasted = 0
    for _ in range(5):
        batch = make_batch(gen)
        out, plan = cf.compose(batch)
        assert (plan.op == PASTE).all()
        for i in range(8):
            d, k = int(plan.donors[i, 0]), int(plan.classes[i, 0])
            assert d != i and k > 0
            region = batch['mask'][d] == k
            assert region.any()
            pasted += int(region.sum())
            assert (out['mask'][i][region] == k).all()
            assert torch.equal(out['image'][i][:, region], batch['image'][d][:, region])
            assert torch.equal(out['mask'][i][~region], batch['mask'][i][~region])
            assert torch.equal(out['image'][i][:, ~region], batch['image'][i][:, ~region])
    assert pasted > 0


def test_several_regions_are_pasted_in_order(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.0, tile_prob=0.0, num_regions=2, seed=2)
    batch = make_batch(gen)
    out, plan = cf.compose(batch)
    for i in range(8):
        image, mask = batch['image'][i].clone(), batch['mask'][i].clone()
        donors = plan.donors[i].tolist()
        assert donors[0] != donors[1] and i not in donors
        for d, k in zip(donors, plan.classes[i].tolist()):
            region = batch['mask'][d] == k
            mask[region] = k
            image[:, region] = batch['image'][d][:, region]
        assert torch.equal(out['mask'][i], mask)
        assert torch.equal(out['image'][i], image)


def test_tiling_places_each_quadrant(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.0, tile_prob=1.0, seed=3)
    batch = make_batch(gen, size=16)
    out, plan = cf.compose(batch)
    assert (plan.op == TILE).all()
    assert (plan.donors == -1).all() and (plan.classes == -1).all()
    for i in range(8):
        members = plan.tiles[i].tolist()
        assert i in members and len(set(members)) == 4
        quadrants = [
            (slice(0, 8), slice(0, 8)),
            (slice(0, 8), slice(8, 16)),
            (slice(8, 16), slice(0, 8)),
            (slice(8, 16), slice(8, 16)),
        ]
        for m, (ys, xs) in zip(members, quadrants):
            expected_image = F.avg_pool2d(batch['image'][m][None], 2)[0]
            assert torch.allclose(out['image'][i][:, ys, xs], expected_image)
            assert torch.equal(out['mask'][i][ys, xs], batch['mask'][m][1::2, 1::2])
    assert_consistent(out)


def test_tiling_odd_size_and_small_batch(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.0, tile_prob=1.0, seed=4)
    batch = make_batch(gen, b=2, size=15)
    out, plan = cf.compose(batch)
    assert out['image'].shape == (2, 3, 15, 15) and out['mask'].shape == (2, 15, 15)
    # With one other sample, donors repeat; each tile is one of the two samples.
    assert set(plan.tiles.flatten().tolist()) <= {0, 1}
    assert (plan.tiles == torch.arange(2)[:, None]).any(1).all()
    # Top-left tile is 8x8 (ceil), bottom-right 7x7, each a nearest downscale of its sample.
    for i in range(2):
        tl, br = int(plan.tiles[i, 0]), int(plan.tiles[i, 3])
        expected = F.interpolate(
            batch['mask'][tl][None, None].float(), size=(8, 8), mode='nearest-exact'
        )[0, 0].long()
        assert torch.equal(out['mask'][i, :8, :8], expected)
        expected = F.interpolate(
            batch['mask'][br][None, None].float(), size=(7, 7), mode='nearest-exact'
        )[0, 0].long()
        assert torch.equal(out['mask'][i, 8:, 8:], expected)
    assert_consistent(out)


def test_real_share_one_returns_batch_unchanged(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=1.0, seed=0)
    batch = make_batch(gen)
    tensors = {k: v for k, v in batch.items()}
    out, plan = cf.compose(batch)
    assert out is batch
    assert all(out[k] is v for k, v in tensors.items())
    assert (plan.op == REAL).all() and (plan.tiles == -1).all()
    assert cf(batch) is batch
    # Counting still runs, so switching CF-Comp on later starts from real statistics.
    assert float(cf.samples_seen) == 16


def test_single_sample_batch_is_left_real(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.0, seed=0)
    batch = make_batch(gen, b=1)
    out, plan = cf.compose(batch)
    assert out is batch and plan.op.tolist() == [REAL]


@pytest.mark.parametrize(('b', 'real_share', 'composed'), [(8, 0.25, 6), (10, 0.5, 5), (4, 0, 4)])
def test_composed_share(gen: torch.Generator, b: int, real_share: float, composed: int) -> None:
    cf = CounterfactualComposition(real_share=real_share, seed=0)
    for _ in range(3):
        _, plan = cf.compose(make_batch(gen, b=b))
        assert int((plan.op != REAL).sum()) == composed


def test_fractional_share_is_rounded_stochastically(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.5, seed=0)
    batch = make_batch(gen, b=3)
    counts = [int((cf.compose(batch)[1].op != REAL).sum()) for _ in range(200)]
    assert set(counts) == {1, 2}
    assert abs(sum(counts) / len(counts) - 1.5) < 0.15


def test_other_keys_pass_through(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.0, seed=0)
    batch = make_batch(gen)
    paths = [f'scene_{i}.png' for i in range(8)]
    weights = torch.arange(8.0)
    batch.update(path=paths, weight=weights)
    out = cf(batch)
    assert out['path'] is paths and out['weight'] is weights
    assert set(out) == set(batch)


def test_composed_source_recipient(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.0, composed_source='recipient', seed=0)
    batch = make_batch(gen)
    out = cf(batch)
    assert out['source'] == batch['source'] and out['source'] is not batch['source']


def test_background_only_donors_fall_back_to_tiling(gen: torch.Generator) -> None:
    batch = make_batch(gen, b=4, objects={})
    batch['mask'].zero_()
    batch['mask'][0, :4, :4] = C['water']  # only sample 0 has something to paste
    batch['prompt'] = [prompt_from_mask(m) for m in batch['mask']]
    batch['categories'] = torch.stack([multi_hot(m) for m in batch['mask']])
    cf = CounterfactualComposition(real_share=0.0, tile_prob=0.0, seed=0)
    out, plan = cf.compose(batch)
    # Sample 0 has no donor holding a non-background class; the others take water from it.
    assert plan.op.tolist() == [TILE, PASTE, PASTE, PASTE]
    assert plan.donors[1:, 0].tolist() == [0, 0, 0]
    assert plan.classes[1:, 0].tolist() == [C['water']] * 3
    assert_consistent(out)


def presence_entropy(cf: CounterfactualComposition | None, batches: int = 200) -> float:
    """Normalised entropy of class presence frequency (background excluded) after CF-Comp."""
    g = torch.Generator().manual_seed(99)
    counts = torch.zeros(NUM_CLASSES)
    for _ in range(batches):
        batch = make_batch(g, b=16)
        if cf is not None:
            batch = cf(batch)
        counts += batch['categories'].sum(0)
    p = counts[1:] / counts[1:].sum()
    p = p[p > 0]
    classes = len(LAND) + len(OBJECTS)
    return float(-(p * p.log()).sum() / math.log(classes))


def test_class_frequencies_get_flatter() -> None:
    plain = presence_entropy(None)
    common = {'real_share': 0.5, 'tile_prob': 0.0, 'source_weight': 0.0, 'scene_weight': 0.0}
    no_rarity = presence_entropy(CounterfactualComposition(rarity_weight=0.0, seed=0, **common))
    rarity = presence_entropy(CounterfactualComposition(rarity_weight=1.0, seed=0, **common))
    default = presence_entropy(CounterfactualComposition(seed=0))
    # Measured: plain 0.810, no rarity 0.812, rarity 0.903, defaults 0.904. Uniform pasting
    # barely flattens; inverse-frequency donors and regions do.
    assert rarity > no_rarity + 0.05
    assert rarity > plain + 0.05
    assert default > plain + 0.05


def test_rare_classes_are_pasted_more(gen: torch.Generator) -> None:
    def share_of_rare(rarity_weight: float) -> float:
        cf = CounterfactualComposition(
            real_share=0.0,
            tile_prob=0.0,
            rarity_weight=rarity_weight,
            source_weight=0.0,
            scene_weight=0.0,
            seed=0,
        )
        g = torch.Generator().manual_seed(5)
        pasted = torch.cat([cf.compose(make_batch(g, b=16))[1].classes[:, 0] for _ in range(50)])
        return float(
            ((pasted == C['small vehicle']) | (pasted == C['storage tank'])).float().mean()
        )

    assert share_of_rare(1.0) > 2 * share_of_rare(0.0)


def donor_statistics(cf: CounterfactualComposition, batches: int = 50) -> tuple[float, float]:
    """Share of cross-source donors and mean scene distance recipient-donor over many batches."""
    g = torch.Generator().manual_seed(7)
    cross, distances = [], []
    for _ in range(batches):
        batch = make_batch(g, b=16)
        _, plan = cf.compose(batch)
        donors = plan.donors[:, 0]
        sources = batch['source']
        cross += [sources[i] != sources[int(d)] for i, d in enumerate(donors)]
        hist = torch.stack(
            [torch.bincount(m.flatten(), minlength=NUM_CLASSES) for m in batch['mask']]
        )
        unit = F.normalize(hist.float(), dim=1)
        distances += (1 - (unit * unit[donors]).sum(1)).tolist()
    return sum(cross) / len(cross), sum(distances) / len(distances)


def test_source_axis_prefers_cross_source_donors() -> None:
    common = {'real_share': 0.0, 'tile_prob': 0.0, 'rarity_weight': 0.0, 'scene_weight': 0.0}
    off, _ = donor_statistics(CounterfactualComposition(source_weight=0.0, seed=0, **common))
    on, _ = donor_statistics(CounterfactualComposition(source_weight=3.0, seed=0, **common))
    # Uniform: 8 of the 15 other samples are cross-source (0.53); weight 3: 8e^3/(8e^3+7) = 0.96.
    assert 0.45 < off < 0.62
    assert on > 0.9


def test_scene_axis_prefers_different_land_cover() -> None:
    common = {'real_share': 0.0, 'tile_prob': 0.0, 'rarity_weight': 0.0, 'source_weight': 0.0}
    _, off = donor_statistics(CounterfactualComposition(scene_weight=0.0, seed=0, **common))
    _, on = donor_statistics(CounterfactualComposition(scene_weight=5.0, seed=0, **common))
    assert on > off + 0.1


def test_class_frequency_counts(gen: torch.Generator) -> None:
    cumulative = CounterfactualComposition(seed=0)
    ema = CounterfactualComposition(frequency_momentum=0.9, seed=0)
    means, total = [], torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for b in (8, 4, 12):
        batch = make_batch(gen, b=b)
        cumulative(batch)
        ema(batch)
        total += batch['categories'].double().sum(0)
        means.append(batch['categories'].double().mean(0))
    assert float(cumulative.samples_seen) == 24
    assert torch.allclose(cumulative.class_frequency, total / 24)
    expected = 0.9 * (0.9 * means[0] + 0.1 * means[1]) + 0.1 * means[2]
    assert torch.allclose(ema.class_frequency, expected)


def test_deterministic_for_a_seed(gen: torch.Generator) -> None:
    batches = [make_batch(gen) for _ in range(3)]
    runs = []
    for seed in (11, 11, 12):
        cf = CounterfactualComposition(real_share=0.25, num_regions=2, seed=seed)
        runs.append([cf.compose(clone(b)) for b in batches])
    for (out_a, plan_a), (out_b, plan_b) in zip(runs[0], runs[1]):
        for field in ('op', 'donors', 'classes', 'tiles'):
            assert torch.equal(getattr(plan_a, field), getattr(plan_b, field))
        assert torch.equal(out_a['image'], out_b['image'])
        assert out_a['prompt'] == out_b['prompt']
    assert any(
        not torch.equal(a.op, c.op) or not torch.equal(a.donors, c.donors)
        for (_, a), (_, c) in zip(runs[0], runs[2])
    )


def test_each_distributed_rank_draws_its_own_choices(
    gen: torch.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = [make_batch(gen) for _ in range(3)]

    def plans(seed: int) -> list[CompositionPlan]:
        cf = CounterfactualComposition(real_share=0.25, num_regions=2, seed=seed)
        return [cf.compose(clone(b))[1] for b in batches]

    def same(a: list[CompositionPlan], b: list[CompositionPlan]) -> bool:
        return all(
            torch.equal(p.op, q.op) and torch.equal(p.donors, q.donors) for p, q in zip(a, b)
        )

    rank0, seed8 = plans(7), plans(8)
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    monkeypatch.setattr(torch.distributed, 'get_rank', lambda: 1)
    rank1 = plans(7)
    assert not same(rank0, rank1)
    assert same(rank1, seed8)  # rank r draws as seed + r would


def test_pickles_with_its_random_state(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(real_share=0.0, seed=3)
    cf(make_batch(gen))
    batch = make_batch(gen)
    twins = [pickle.loads(pickle.dumps(cf)), copy.deepcopy(cf)]
    plans = [m.compose(clone(batch))[1] for m in [cf, *twins]]
    for plan in plans[1:]:
        assert torch.equal(plan.donors, plans[0].donors) and torch.equal(plan.op, plans[0].op)


@pytest.mark.parametrize(
    'device',
    [
        'cpu',
        pytest.param(
            'cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA')
        ),
    ],
)
def test_runs_on_the_batch_device(gen: torch.Generator, device: str) -> None:
    batch = make_batch(gen)
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out, plan = CounterfactualComposition(real_share=0.0, seed=8).compose(moved)
    ref, ref_plan = CounterfactualComposition(real_share=0.0, seed=8).compose(batch)
    for key in ('image', 'mask', 'categories'):
        assert out[key].device.type == device
        assert torch.equal(out[key].cpu(), ref[key])
    assert torch.equal(plan.tiles, ref_plan.tiles) and out['prompt'] == ref['prompt']


def test_plan_is_a_dataclass(gen: torch.Generator) -> None:
    _, plan = CounterfactualComposition(real_share=0.0, num_regions=2, seed=0).compose(
        make_batch(gen)
    )
    assert isinstance(plan, CompositionPlan)
    assert plan.op.shape == (8,) and plan.donors.shape == (8, 2) and plan.tiles.shape == (8, 4)


def test_bad_batches_are_rejected(gen: torch.Generator) -> None:
    cf = CounterfactualComposition(seed=0)
    batch = make_batch(gen)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['source'\]"):
        cf({k: v for k, v in batch.items() if k != 'source'})
    with pytest.raises(ValueError, match=r"batch\['image'\] must be a \[B, C, H, W\] tensor"):
        cf({**batch, 'image': batch['image'][0]})
    with pytest.raises(ValueError, match=r"batch\['mask'\] must be an integer tensor of shape"):
        cf({**batch, 'mask': batch['mask'].float()})
    with pytest.raises(ValueError, match=r'\[8, 16, 16\] matching the image'):
        cf({**batch, 'mask': batch['mask'][:, :8]})
    with pytest.raises(ValueError, match=r"batch\['categories'\] must be a tensor of shape"):
        cf({**batch, 'categories': batch['categories'][:, :10]})
    with pytest.raises(ValueError, match=r"batch\['prompt'\] must be a list of 8 str"):
        cf({**batch, 'prompt': batch['prompt'][:3]})
    with pytest.raises(ValueError, match=r'ids must be in \[0, 66\], got \[0, 70\]'):
        cf({**batch, 'mask': batch['mask'].clamp(max=70) + (batch['mask'] == 8) * 62})


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'real_share': 1.5}, r'real_share must be in \[0, 1\]'),
        ({'tile_prob': -0.1}, r'tile_prob must be in \[0, 1\]'),
        ({'source_weight': math.inf}, 'source_weight must be a finite number'),
        ({'num_regions': 0}, 'num_regions must be >= 1'),
        ({'frequency_momentum': 1.0}, r'frequency_momentum must be None or in \[0, 1\)'),
        ({'composed_source': 'mixed'}, "composed_source must be 'composed' or 'recipient'"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CounterfactualComposition(**kwargs)


def test_built_from_lightningcli_yaml() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument('--cf_comp', type=CounterfactualComposition)
    config = parser.parse_string(
        'cf_comp:\n'
        '  class_path: torchgeo_earthsynth.transforms.cf_comp.CounterfactualComposition\n'
        '  init_args: {real_share: 0.25, tile_prob: 0.5, rarity_weight: 2.0, seed: 7}\n'
    )
    cf = parser.instantiate_classes(config).cf_comp
    assert isinstance(cf, CounterfactualComposition)
    assert (cf.real_share, cf.tile_prob, cf.rarity_weight, cf.seed) == (0.25, 0.5, 2.0, 7)


def test_on_mini_corpus(mini_root: Path) -> None:
    dataset = EarthSynth180K(mini_root, split='train')
    batch = next(iter(DataLoader(dataset, batch_size=8, shuffle=False)))
    original = clone(batch)
    cf = CounterfactualComposition(real_share=0.0, tile_prob=0.5, num_regions=2, seed=0)
    out, plan = cf.compose(batch)
    assert (plan.op != REAL).all()
    assert_consistent(out)
    assert out['image'].shape == original['image'].shape and out['image'].dtype == torch.float32
    assert out['source'] == ['composed'] * 8
    # The mini corpus has several sources; composition mixes their classes.
    assert len(set(original['source'])) > 1
    assert not torch.equal(out['mask'], original['mask'])
    assert float(cf.samples_seen) == 8
