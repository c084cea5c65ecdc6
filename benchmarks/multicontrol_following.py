# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Does a trained two-condition model (class mask + edge map) follow both maps?

Trains the tiny multi-condition model (``MultiControlNetTask``, ``seg`` + ``edges``, per-map
dropout) briefly on the mini corpus, then generates each held-out (val) scene from its maps,
given together and each alone (same prompts and seeds), and scores each map's agreement:

* ``seg``: the mIoU of a per-pixel classifier (fitted on real training images) on the
  generated images against the condition masks (``metrics.mask_fidelity``);
* ``edges``: the F1 of the generated images' Canny edges against the condition edge map
  (``--edge-tolerance`` px of slack, 0 by default: a mini scene's edge map covers ~17 % of
  its pixels, ~52 % within 1 px, so 1 px of slack leaves little between chance and a match).

Rows: the untrained model, the trained model given shuffled maps (each scene's maps drawn
for another scene's prompt and seed, scored against the scene's own: what prompts and priors
alone earn) and the trained model given the right maps.

Usage: uv run python benchmarks/multicontrol_following.py [--steps 600] [--vae-steps 150]
It prints ``ratio: <min over both maps of trained / untrained agreement>`` (maps
given together).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import kornia
import lightning.pytorch as pl
import torch
from brief_fit import add_fit_arguments, fit_on_mini
from provenance import add_results_argument, write_result
from torch import Tensor

from torchgeo_earthsynth.controls import ControlExtractor, edge_map
from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.lightning_modules import MultiControlNetTask
from torchgeo_earthsynth.metrics import PixelClassifier, mask_fidelity

CONTROLS = ('seg', 'edges')


def edge_f1(images: Tensor, edges: Tensor, tolerance: int = 1) -> float:
    """Mean F1 of the images' Canny edges against given edge maps, within ``tolerance`` px.

    Args:
        images: generated float [B, 3, H, W] in 0..255.
        edges: the condition edge maps float [B, 1, H, W] in {0, 1}.
        tolerance: a pixel within this many pixels of an edge of the other map matches.

    Returns:
        The F1 averaged over images (0 where an image or its map has no edge).
    """
    found = edge_map(images)
    kernel = torch.ones(2 * tolerance + 1, 2 * tolerance + 1)
    near_found = kornia.morphology.dilation(found, kernel)
    near_given = kornia.morphology.dilation(edges, kernel)
    precision = (found * near_given).sum((1, 2, 3)) / found.sum((1, 2, 3)).clamp_min(1)
    recall = (edges * near_found).sum((1, 2, 3)) / edges.sum((1, 2, 3)).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-8)
    return float(f1.mean())


def agreement(
    generate: Callable[[dict[str, Tensor]], Tensor],
    controls: dict[str, Tensor],
    scored: dict[str, Tensor],
    segmenter: PixelClassifier,
    masks: Tensor,
    tolerance: int,
) -> dict[str, float]:
    """Each map's agreement with images generated from both maps and from each alone.

    Args:
        generate: maps -> images (same prompts and seeds every call).
        controls: the maps to generate from.
        scored: the maps the images are scored against.
        segmenter: the per-pixel classifier of the ``seg`` score.
        masks: the class masks ``scored['seg']`` encodes.
        tolerance: the edge F1's slack in px.

    Returns:
        ``{'seg|both': ..., 'edges|both': ..., 'seg|alone': ..., 'edges|alone': ...}``.
    """
    both = generate(controls)
    seg_alone = generate({'seg': controls['seg']})
    edges_alone = generate({'edges': controls['edges']})
    return {
        'seg|both': mask_fidelity(segmenter, both, masks).miou,
        'edges|both': edge_f1(both, scored['edges'], tolerance),
        'seg|alone': mask_fidelity(segmenter, seg_alone, masks).miou,
        'edges|alone': edge_f1(edges_alone, scored['edges'], tolerance),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_fit_arguments(parser)
    parser.add_argument('--control-dropout', type=float, default=0.3)
    parser.add_argument('--edge-tolerance', type=int, default=0, help='edge F1 slack, px')
    # the demo's recipe (torchgeo_earthsynth.demo.DemoConfig)
    parser.add_argument(
        '--prediction-type', choices=('epsilon', 'v_prediction'), default='v_prediction'
    )
    parser.add_argument('--vae-downscale', type=int, choices=(1, 2), default=1)
    parser.set_defaults(lr=2e-3, vae_steps=200, guidance=1.0, sample_steps=20)
    add_results_argument(parser)
    args = parser.parse_args(argv)

    root = args.root or Path(tempfile.mkdtemp())
    corpus = {'seed': 0, 'size': args.size, 'num_train': args.num_train, 'num_val': args.num_eval}
    val = EarthSynthMini(root, split='val', **corpus)
    held_out = [val[i] for i in range(len(val))]
    masks = torch.stack([s['mask'] for s in held_out])
    real = torch.stack([s['image'] for s in held_out]).float()
    prompts = [s['prompt'] for s in held_out]
    controls = ControlExtractor(CONTROLS)({'image': real, 'mask': masks})
    shuffle = torch.randperm(len(masks), generator=torch.Generator().manual_seed(1))
    shuffled = {name: values[shuffle] for name, values in controls.items()}
    train = EarthSynthMini(root, **corpus)
    fit = [train[i] for i in range(min(128, len(train)))]
    segmenter = (
        PixelClassifier()
        .fit(torch.stack([s['image'] for s in fit]), torch.stack([s['mask'] for s in fit]))
        .eval()
    )

    pl.seed_everything(0)
    task = MultiControlNetTask(
        controls=CONTROLS,
        control_dropout=args.control_dropout,
        image_size=args.size,
        lr=args.lr,
        lr_warmup_steps=20,
        prediction_type=args.prediction_type,
        tiny_vae_downscale=args.vae_downscale,
        vae_warmup_steps=args.vae_steps,
        snr_gamma=5.0,
        ema_decay=None,
        val_num_samples=0,
    )

    def generate(maps: dict[str, Tensor]) -> Tensor:
        synth = task.synthesizer(args.sample_steps, args.guidance)
        return synth.generate(None, prompts, seeds=range(len(prompts)), controls=maps)

    task.eval()
    rows = {
        'untrained': agreement(generate, controls, controls, segmenter, masks, args.edge_tolerance)
    }
    task.train()  # Lightning keeps the module's mode: dropout (prompts, maps) needs train mode
    seconds = fit_on_mini(task, args, root)
    print(f'trained {args.vae_steps} + {args.steps} steps in {seconds:.0f} s')
    task.eval()
    rows['shuffled'] = agreement(
        generate, shuffled, controls, segmenter, masks, args.edge_tolerance
    )
    rows['trained'] = agreement(generate, controls, controls, segmenter, masks, args.edge_tolerance)

    real_miou = mask_fidelity(segmenter, real, masks).miou
    print(f'{len(masks)} held-out scenes, {args.size} px; real images: seg mIoU {real_miou:.3f}')
    print(f'{"":10s} {"seg mIoU":>9s} {"edge F1":>9s} {"seg mIoU":>9s} {"edge F1":>9s}')
    print(f'{"":10s} {"(both)":>9s} {"(both)":>9s} {"(alone)":>9s} {"(alone)":>9s}')
    for name, scores in rows.items():
        print(f'{name:10s} ' + ' '.join(f'{value:9.3f}' for value in scores.values()))
    ratios = {
        key: rows['trained'][key] / max(rows['untrained'][key], 1e-3)
        for key in ('seg|both', 'edges|both')
    }
    versus_shuffled = {
        key: rows['trained'][key] / max(rows['shuffled'][key], 1e-3)
        for key in ('seg|both', 'edges|both')
    }
    print('trained / untrained: ' + ', '.join(f'{k} {v:.2f}' for k, v in ratios.items()))
    print('trained / shuffled: ' + ', '.join(f'{k} {v:.2f}' for k, v in versus_shuffled.items()))
    print(f'ratio: {min(ratios.values()):.3f}')
    summary = {
        'size': args.size,
        'steps': args.steps,
        'vae_steps': args.vae_steps,
        'held_out': len(masks),
        'train_seconds': round(seconds, 1),
        'real_miou': real_miou,
        'rows': rows,
        'trained_vs_untrained': ratios,
        'trained_vs_shuffled': versus_shuffled,
        'ratio': min(ratios.values()),
    }
    write_result('multicontrol_following', summary, args.results, argv)
    return summary


if __name__ == '__main__':
    main()
