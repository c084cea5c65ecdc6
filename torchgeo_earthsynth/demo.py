# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth demo``: the whole EarthSynth loop on the bundled mini corpus, with a report."""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Settings of the demo; the defaults fit 2 CPU cores and about 10 minutes."""

    output: Path = Path('outputs/demo')
    root: Path | None = None  # an EarthSynth-180K root instead of the mini corpus
    device: str = 'cpu'
    image_size: int = 32
    num_train: int = 256
    num_val: int = 64
    steps: int = 600
    vae_steps: int = 200
    batch_size: int = 16
    lr: float = 2e-3
    # palette colours are learnt in minutes from scratch; 'grey' matches the released weights
    condition_encoding: Literal['grey', 'palette'] = 'palette'
    # v-prediction and a VAE at full resolution followed the masks better than epsilon and a
    # 2x VAE in short runs (commit 5c4a2fd); --prediction-type/--vae-downscale rerun them
    prediction_type: Literal['epsilon', 'v_prediction'] = 'v_prediction'
    vae_downscale: int = 1
    inference_steps: int = 20
    # 1.0 skips the unconditional pass (half the synthesis time); prompts name classes only,
    # the mask carries the layout
    guidance_scale: float = 1.0
    num_synthetic: int = 64
    layout_threshold: float = 0.15
    # data-efficiency study: real labelled scenes per run (None: all training scenes)
    downstream_budgets: tuple[int | None, ...] = (8, None)
    downstream_train: int | None = None  # one budget instead of downstream_budgets
    downstream_steps: int = 150
    # TorchGeo's FCN (5 convolutions at full resolution) runs 100 steps in ~4 s on 2 cores,
    # U-Net/ResNet-18 in ~17 s; at lr 1e-3 it had not converged on all scenes in 150 steps
    downstream_model: dict[str, Any] = field(
        default_factory=lambda: {'model': 'fcn', 'num_filters': 32, 'lr': 3e-3}
    )
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _stage(config: DemoConfig, name: str) -> Iterator[None]:
    """Announce a stage and record its wall time in ``config.timings``."""
    tqdm.write(f'==> {name}')
    start = time.perf_counter()
    yield
    config.timings[name] = round(time.perf_counter() - start, 1)


def _datamodule(config: DemoConfig, **kwargs: Any) -> Any:
    from .datamodules import EarthSynth180KDataModule, EarthSynthMiniDataModule

    if config.root is not None:
        return EarthSynth180KDataModule(root=config.root, size=config.image_size, **kwargs)
    return EarthSynthMiniDataModule(
        seed=config.seed,
        tile_size=config.image_size,
        num_train=config.num_train,
        num_val=config.num_val,
        **kwargs,
    )


def run_demo(config: DemoConfig) -> Path:
    """Run every stage and write ``<output>/report.md``.

    Stages: make the mini corpus, train the tiny EarthSynth model (VAE warm-up, then
    ControlNet + UNet with CF-Comp), synthesise samples for held-out masks, R-Filter them
    into a bank, compare mask fidelity of trained vs untrained generations, and run the
    downstream harness (small real subset, with and without synthetic augmentation).

    Args:
        config: the demo settings.

    Returns:
        Path of the report.
    """
    from .bank import SyntheticBank
    from .data_efficiency import run_data_efficiency
    from .demo_report import loss_curve, write_report
    from .lightning_modules import DiffusersExport, EarthSynthControlNet, sample_grid
    from .metrics import PixelClassifier, mask_fidelity, tiny_open_clip
    from .rfilter import RFilter
    from .transforms import CounterfactualComposition

    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.seed, verbose=False)
    accelerator = 'gpu' if config.device.startswith('cuda') else config.device

    with _stage(config, '1/6 corpus'):
        datamodule = _datamodule(
            config,
            batch_size=config.batch_size,
            normalize=False,
            flip=True,
            cf_comp=CounterfactualComposition(real_share=0.75, seed=config.seed),
        )
        datamodule.prepare_data()
        datamodule.setup('fit')
        train_set, val_set = datamodule.train_dataset, datamodule.val_dataset
        tqdm.write(f'    {len(train_set)} training and {len(val_set)} held-out scenes')

    with _stage(config, '2/6 train EarthSynth (tiny)'):
        model = EarthSynthControlNet(
            preset='tiny',
            image_size=config.image_size,
            lr=config.lr,
            lr_warmup_steps=20,
            condition_encoding=config.condition_encoding,
            prediction_type=config.prediction_type,
            tiny_vae_downscale=config.vae_downscale,
            vae_warmup_steps=config.vae_steps,
            snr_gamma=5.0,
            local_loss_weight=0.5,
            val_num_samples=8,
            val_inference_steps=config.inference_steps,
            val_guidance_scale=config.guidance_scale,
            seed=config.seed,
        )
        untrained = EarthSynthControlNet(
            preset='tiny',
            image_size=config.image_size,
            condition_encoding=config.condition_encoding,
            prediction_type=config.prediction_type,
            tiny_vae_downscale=config.vae_downscale,
            seed=config.seed,
        )
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=1,
            max_steps=config.steps,
            val_check_interval=config.steps,
            check_val_every_n_epoch=None,
            limit_val_batches=1,
            logger=pl.loggers.CSVLogger(out, name='train', version=''),
            callbacks=[DiffusersExport(dirpath=str(out / 'export'))],
            enable_checkpointing=False,
            log_every_n_steps=10,
            num_sanity_val_steps=0,
        )
        trainer.fit(model, datamodule=datamodule)
        loss_curve(Path(trainer.log_dir or out) / 'metrics.csv', out / 'loss_curve.png')

    device = torch.device(config.device)
    for module in (untrained, model):
        module.to(device).eval()

    def generate(module: EarthSynthControlNet, samples: list[dict[str, Any]], name: str) -> Any:
        synth = module.synthesizer(config.inference_steps, config.guidance_scale)
        masks = torch.stack([s['mask'] for s in samples])
        prompts = [s['prompt'] for s in samples]
        chunks = []
        for i in tqdm(range(0, len(samples), 16), desc=f'    {name}', leave=False):
            seeds = range(i, min(i + 16, len(samples)))
            chunks.append(synth.generate(masks[i : i + 16], prompts[i : i + 16], seeds).cpu())
        return torch.cat(chunks)

    # Held-out (val) masks judge the generator; the bank is made from *training* masks so
    # the downstream test split never leaks into training.
    held_out = [val_set[i] for i in range(min(config.num_synthetic, len(val_set)))]
    masks = torch.stack([s['mask'] for s in held_out])
    real = torch.stack([s['image'] for s in held_out])
    prompts = [s['prompt'] for s in held_out]

    with _stage(config, '3/6 synthesise held-out masks'):
        models = {'untrained': untrained, 'trained': model}
        generated = {name: generate(module, held_out, name) for name, module in models.items()}
        # control: the trained model conditioned on another scene's mask (same prompt, seed)
        shuffle = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(1))
        shuffled = [{**s, 'mask': held_out[int(j)]['mask']} for s, j in zip(held_out, shuffle)]
        generated['shuffled'] = generate(model, shuffled, 'shuffled masks')
        for name, title, png in (
            ('trained', 'held-out masks: condition | generated | real', 'samples.png'),
            ('untrained', 'untrained model, same seeds', 'samples_untrained.png'),
        ):
            grid = sample_grid(masks[:8], generated[name][:8], real[:8], prompts[:8], title=title)
            grid.savefig(out / png, dpi=90)
            plt.close(grid)

    with _stage(config, '4/6 mask fidelity'):
        count = min(128, len(train_set))
        train_images = torch.stack([train_set[i]['image'] for i in range(count)])
        train_masks = torch.stack([train_set[i]['mask'] for i in range(count)])
        segmenter = PixelClassifier().fit(train_images, train_masks, seed=config.seed).eval()
        fidelity = {
            'real held-out images (reference)': mask_fidelity(segmenter, real, masks),
            'untrained model': mask_fidelity(segmenter, generated['untrained'], masks),
            'trained model given shuffled masks': mask_fidelity(
                segmenter, generated['shuffled'], masks
            ),
            'trained model': mask_fidelity(segmenter, generated['trained'], masks),
        }
        fidelity_rows = [
            {'images': k, 'mIoU': v.miou, 'pixel accuracy': v.pixel_accuracy}
            for k, v in fidelity.items()
        ]

    with _stage(config, '5/6 synthesise training masks, R-Filter into a bank'):
        layouts = [train_set[i] for i in range(min(config.num_synthetic, len(train_set)))]
        bank_images = generate(model, layouts, 'bank')
        clip = tiny_open_clip(config.seed)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the tiny CLIP is random: alignment is reported only
            rfilter = RFilter(
                clip_model=clip.model,
                clip_tokenizer=clip.tokenizer,
                alignment_threshold=0.0,
                segmenter=segmenter,
                layout_threshold=config.layout_threshold,
                normalize_std=(1.0, 1.0, 1.0),  # the pixel classifier takes 0..255 images
            )
        batch = {
            'image': bank_images,
            'mask': torch.stack([s['mask'] for s in layouts]),
            'prompt': [s['prompt'] for s in layouts],
            'reference': torch.stack([s['image'] for s in layouts]),
        }
        result = rfilter(batch)
        summary = rfilter.summary()
        (out / 'rfilter_summary.csv').write_text(summary.to_csv())
        bank = SyntheticBank(out / 'bank')
        done = bank.done_keys()
        kept = [
            {
                'image': bank_images[i],
                'mask': batch['mask'][i],
                'prompt': batch['prompt'][i],
                'seed': i,
                'source': 'synthetic',
            }
            for i in range(len(layouts))
            if bool(result.keep[i])
        ]
        bank.add([s for s in kept if s['seed'] not in done])
        bank.consolidate()
        tqdm.write(f'    kept {len(kept)} of {len(layouts)}; bank holds {len(bank.refresh())}')

    with _stage(config, '6/6 downstream: data efficiency'):
        budgets = _budgets(config)
        # one batch size for every budget (the last partial batch is dropped)
        batch_size = min([config.batch_size, *(b for b in budgets if b is not None)])
        data_args: dict[str, Any] = {
            'batch_size': batch_size,
            'num_workers': 0,
            'root': None,
            'tile_size': config.image_size,
            'seed': config.seed,
            'num_train': config.num_train,
            'num_val': config.num_val,
        }
        if config.root is not None:
            data_args.update(root=str(config.root))
        arms = ['real', 'real+synthetic']
        if len(kept):
            synthetic_source: dict[str, Any] = {'bank': str(out / 'bank'), 'synthetic': {'p': 0.5}}
            source_note = f'drawn from the R-Filtered bank ({len(kept)} samples), p = 0.5'
            arms.append('synthetic-only')
        else:  # R-Filter kept nothing: generate online from the export instead
            loader = 'torchgeo_earthsynth.transforms.synthetic_augmentation.SynthesizerLoader'
            synthetic_source = {
                'synthetic': {
                    'class_path': 'torchgeo_earthsynth.transforms.SyntheticAugmentation',
                    'init_args': {
                        'source': 'online',
                        'p': 0.5,
                        'synthesizer': {
                            'class_path': loader,
                            'init_args': {
                                'pretrained': str(out / 'export'),
                                'num_inference_steps': config.inference_steps,
                                'guidance_scale': config.guidance_scale,
                            },
                        },
                    },
                }
            }
            source_note = 'generated online from the export (R-Filter kept nothing), p = 0.5'
        study = run_data_efficiency(
            {
                'task': 'segmentation',
                'data': {
                    'class_path': 'torchgeo_earthsynth.datamodules.downstream.'
                    'MiniSegmentationDataModule',
                    'init_args': data_args,
                },
                **synthetic_source,
                # constant LR: an epoch of a small budget is one step, so TorchGeo's
                # plateau schedule (patience in epochs) would cut the LR within a few steps
                'model': {**config.downstream_model, 'patience': config.downstream_steps},
                'arms': arms,
                'seeds': list(config.seeds),
                # an epoch of 8 scenes is one step: validate after 64 samples, not every step
                'epoch_samples': 64,
                'trainer': {
                    'accelerator': accelerator,
                    'max_steps': config.downstream_steps,
                    'limit_val_batches': 1,
                },
                'output': str(out / 'downstream'),
                'progress': True,
            },
            budgets,
        )

    report = write_report(
        config,
        fidelity_rows=fidelity_rows,
        rfilter_summary=summary,
        kept=len(kept),
        generated=len(layouts),
        source_note=source_note,
        study=study,
        batch_size=batch_size,
        budgets=budgets,
    )
    tqdm.write(f'report: {report}')
    return report


def _budgets(config: DemoConfig) -> list[int | None]:
    if config.downstream_train is not None:  # the single-budget setting of earlier versions
        return [config.downstream_train]
    return list(config.downstream_budgets)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``earthsynth demo``."""
    from .data_efficiency import budget_label
    from .models.tiny import TINY_DOWNSCALES

    defaults = DemoConfig()
    parser = argparse.ArgumentParser(
        prog='earthsynth demo',
        description='The whole EarthSynth loop on the bundled mini corpus, with a report: '
        'train a tiny ControlNet, synthesise, R-Filter, bank, and compare downstream '
        'training with and without synthetic data.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        '--output', type=Path, default=defaults.output, help='folder for the report and files'
    )
    parser.add_argument(
        '--root',
        type=Path,
        default=None,
        help='an EarthSynth-180K root instead of the bundled mini corpus',
    )
    parser.add_argument('--device', default=defaults.device, help='cpu, cuda, cuda:1...')
    parser.add_argument(
        '--steps', type=int, default=defaults.steps, help='generator training steps in all'
    )
    parser.add_argument(
        '--vae-steps',
        type=int,
        default=defaults.vae_steps,
        help='of those, the first steps warming up the tiny VAE',
    )
    parser.add_argument(
        '--image-size', type=int, default=defaults.image_size, help='tile size in pixels'
    )
    parser.add_argument(
        '--batch-size', type=int, default=defaults.batch_size, help='generator training batch'
    )
    parser.add_argument(
        '--prediction-type',
        choices=('epsilon', 'v_prediction'),
        default=defaults.prediction_type,
        help='what the generator predicts',
    )
    parser.add_argument(
        '--vae-downscale',
        type=int,
        choices=TINY_DOWNSCALES,
        default=defaults.vae_downscale,
        help="the tiny VAE's downscale factor (2 blurs the texture of 32 px tiles)",
    )
    parser.add_argument(
        '--num-synthetic',
        type=int,
        default=defaults.num_synthetic,
        help='synthetic samples to generate (and held-out layouts to score)',
    )
    parser.add_argument(
        '--downstream-steps',
        type=int,
        default=defaults.downstream_steps,
        help='training steps of each downstream run',
    )
    parser.add_argument(
        '--downstream-budgets',
        nargs='+',
        default=[budget_label(b) for b in defaults.downstream_budgets],
        help="real labelled scenes per downstream run, e.g. 8 16 32 all ('all': every one)",
    )
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=list(defaults.seeds),
        help='seeds of the downstream runs (one run per arm and seed)',
    )
    args = parser.parse_args(argv)
    try:
        budgets = tuple(None if b == 'all' else int(b) for b in args.downstream_budgets)
    except ValueError:
        parser.error(f'--downstream-budgets takes counts or all, got {args.downstream_budgets}')
    config = DemoConfig(
        output=args.output,
        root=args.root,
        device=args.device,
        steps=args.steps,
        vae_steps=args.vae_steps,
        image_size=args.image_size,
        batch_size=args.batch_size,
        prediction_type=args.prediction_type,
        vae_downscale=args.vae_downscale,
        num_synthetic=args.num_synthetic,
        downstream_steps=args.downstream_steps,
        downstream_budgets=budgets,
        seeds=tuple(args.seeds),
    )
    run_demo(config)
