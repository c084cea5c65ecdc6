# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth demo``: the whole EarthSynth loop on the bundled mini corpus, with a report."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from torchgeo_earthsynth.bank.layouts import class_counts
from torchgeo_earthsynth.demo.config import DemoConfig

logger = logging.getLogger(__name__)


@contextmanager
def _stage(config: DemoConfig, name: str) -> Iterator[None]:
    """Announce a stage and record its wall time in ``config.timings``."""
    tqdm.write(f'==> {name}')
    start = time.perf_counter()
    yield
    config.timings[name] = round(time.perf_counter() - start, 1)


def demo_datamodule(config: DemoConfig, **kwargs: Any) -> Any:
    """The demo's corpus: the long-tailed mini corpus, or an EarthSynth-180K root.

    Args:
        config: the demo settings (root, tile size, scene counts, seed).
        **kwargs: passed to the datamodule.

    Returns:
        An ``EarthSynthMiniDataModule`` (or ``EarthSynth180KDataModule`` with a root).
    """
    from torchgeo_earthsynth.datamodules import EarthSynth180KDataModule, EarthSynthMiniDataModule

    if config.root is not None:
        return EarthSynth180KDataModule(root=config.root, size=config.image_size, **kwargs)
    return EarthSynthMiniDataModule(
        seed=config.seed,
        tile_size=config.image_size,
        num_train=config.num_train,
        num_val=config.num_val,
        long_tail=config.long_tail,
        **kwargs,
    )


def _tiny_model(config: DemoConfig, **kwargs: Any) -> Any:
    from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet

    return EarthSynthControlNet(
        preset='tiny',
        image_size=config.image_size,
        condition_encoding=config.condition_encoding,
        prediction_type=config.prediction_type,
        tiny_vae_downscale=config.vae_downscale,
        seed=config.seed,
        **kwargs,
    )


def _train_generator(config: DemoConfig, datamodule: Any) -> Any:
    """Train the tiny EarthSynth model from scratch (VAE warm-up, then ControlNet + UNet)."""
    from torchgeo_earthsynth.demo.report import loss_curve
    from torchgeo_earthsynth.lightning_modules import DiffusersExport

    out = config.output
    model = _tiny_model(
        config,
        lr=config.lr,
        lr_warmup_steps=20,
        vae_warmup_steps=config.vae_steps,
        snr_gamma=5.0,
        local_loss_weight=0.5,
        val_num_samples=8,
        val_inference_steps=config.inference_steps,
        val_guidance_scale=config.guidance_scale,
    )
    trainer = pl.Trainer(
        accelerator='gpu' if config.device.startswith('cuda') else config.device,
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
    return (
        model.to(torch.device(config.device))
        .eval()
        .synthesizer(config.inference_steps, config.guidance_scale)
    )


def run_demo(config: DemoConfig) -> Path:
    """Run every stage and write ``<output>/report.md``.

    Stages: make the (long-tailed) mini corpus; load the shipped tiny EarthSynth generator
    (or train one: VAE warm-up, then ControlNet + UNet with CF-Comp); score how well it
    follows held-out masks against an untrained twin and a shuffled-mask control; draw
    class-balanced CF-Comp layouts from training masks, generate them and R-Filter them
    (layout threshold calibrated on real scenes) into a bank; run the downstream study
    (real-label budgets x seeds, with and without synthetic samples).

    Args:
        config: the demo settings.

    Returns:
        Path of the report.
    """
    from torchgeo_earthsynth.demo.report import write_report
    from torchgeo_earthsynth.demo.stages import build_bank, downstream_study
    from torchgeo_earthsynth.lightning_modules import sample_grid
    from torchgeo_earthsynth.metrics import generator_fidelity
    from torchgeo_earthsynth.models.shipped import shipped_generator
    from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer
    from torchgeo_earthsynth.transforms import CounterfactualComposition

    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.seed, verbose=False)

    with _stage(config, '1/5 corpus'):
        datamodule = demo_datamodule(
            config,
            batch_size=config.batch_size,
            normalize=False,
            flip=True,
            cf_comp=CounterfactualComposition(real_share=0.75, seed=config.seed),
        )
        datamodule.prepare_data()
        datamodule.setup('fit')
        train_set, val_set = datamodule.train_dataset, datamodule.val_dataset
        train = [train_set[i] for i in range(len(train_set))]
        tqdm.write(f'    {len(train_set)} training and {len(val_set)} held-out scenes')

    if config.train_generator:
        with _stage(config, '2/5 train EarthSynth (tiny)'):
            generator = _train_generator(config, datamodule)
            generator_note = f'trained in this run ({config.steps} steps), export `export/`'
    else:
        with _stage(config, '2/5 load the shipped generator'):
            folder = config.generator if config.generator is not None else shipped_generator()
            generator = Synthesizer.from_pretrained(
                folder,
                num_inference_steps=config.inference_steps,
                guidance_scale=config.guidance_scale,
                device=config.device,
            )
            generator_note = f'loaded from `{folder}`'
    untrained = _tiny_model(config).to(torch.device(config.device)).eval()

    # Held-out (val) masks judge the generator; the bank is made from *training* masks so
    # the downstream test split never leaks into training.
    held_out = [val_set[i] for i in range(min(config.num_synthetic, len(val_set)))]
    with _stage(config, '3/5 generate for held-out masks, mask fidelity'):
        fidelity = generator_fidelity(
            {
                'untrained model': untrained.synthesizer(
                    config.inference_steps, config.guidance_scale
                ),
                'trained model': generator,
            },
            train[:128],
            held_out,
            shuffled_control='trained model',
            seed=config.seed,
            progress=True,
        )
        masks = torch.stack([s['mask'] for s in held_out[:8]])
        real = torch.stack([s['image'] for s in held_out[:8]])
        prompts = [s['prompt'] for s in held_out[:8]]
        for name, title, png in (
            ('trained model', 'held-out masks: condition | generated | real', 'samples.png'),
            ('untrained model', 'untrained model, same seeds', 'samples_untrained.png'),
        ):
            grid = sample_grid(masks, fidelity.images[name][:8], real, prompts, title=title)
            grid.savefig(out / png, dpi=90)
            plt.close(grid)

    with _stage(config, '4/5 synthesise training layouts, R-Filter into a bank'):
        bank = build_bank(
            generator,
            train,
            fidelity.segmenter,
            out / 'bank',
            count=config.num_bank,
            draw=config.bank_draw,
            rfilter=config.rfilter,
            layout_quantile=config.layout_quantile,
            layout_fraction=config.layout_fraction,
            seed=config.seed,
        )
        tqdm.write(f'    kept {bank.kept} of {bank.generated}')

    with _stage(config, '5/5 downstream: data efficiency'):
        budgets = _budgets(config)
        arms = ['real', 'real+synthetic', 'synthetic-only'] if bank.kept else ['real']
        study = downstream_study(config, bank.folder, budgets, arms, out / 'downstream')

    report = write_report(
        config,
        generator_note=generator_note,
        fidelity=fidelity,
        bank=bank,
        study=study,
        budgets=budgets,
        train_classes=class_counts([s['mask'] for s in train]),
    )
    tqdm.write(f'report: {report}')
    return report


def _budgets(config: DemoConfig) -> list[int | None]:
    if config.downstream_train is not None:  # the single-budget setting of earlier versions
        return [config.downstream_train]
    return list(config.downstream_budgets)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``earthsynth demo``."""
    from torchgeo_earthsynth.evaluation.data_efficiency import budget_label
    from torchgeo_earthsynth.models.tiny import TINY_DOWNSCALES

    defaults = DemoConfig()
    parser = argparse.ArgumentParser(
        prog='earthsynth demo',
        description='The whole EarthSynth loop on the bundled mini corpus, with a report: '
        'load (or train) a tiny ControlNet, synthesise, R-Filter, bank, and compare downstream '
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
        '--generator',
        type=Path,
        default=None,
        help='a pipeline export to use as the generator (default: the shipped one)',
    )
    parser.add_argument(
        '--train-generator',
        action='store_true',
        help='train the tiny generator from scratch in the demo instead of loading one',
    )
    parser.add_argument(
        '--steps',
        type=int,
        default=defaults.steps,
        help='with --train-generator: training steps in all',
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
        '--num-bank', type=int, default=defaults.num_bank, help='layouts generated for the bank'
    )
    parser.add_argument(
        '--bank-draw',
        choices=('uniform', 'balanced', 'cf-comp'),
        default=defaults.bank_draw,
        help='how bank layouts are drawn from training masks',
    )
    parser.add_argument(
        '--no-rfilter', action='store_true', help='keep every generated sample (no R-Filter)'
    )
    parser.add_argument(
        '--layout-quantile',
        type=float,
        default=defaults.layout_quantile,
        help="R-Filter's layout threshold: --layout-fraction x this quantile of the real "
        "training scenes' layout scores",
    )
    parser.add_argument(
        '--layout-fraction',
        type=float,
        default=defaults.layout_fraction,
        help='see --layout-quantile',
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
        generator=args.generator,
        train_generator=args.train_generator,
        steps=args.steps,
        vae_steps=args.vae_steps,
        image_size=args.image_size,
        batch_size=args.batch_size,
        prediction_type=args.prediction_type,
        vae_downscale=args.vae_downscale,
        num_synthetic=args.num_synthetic,
        num_bank=args.num_bank,
        bank_draw=args.bank_draw,
        rfilter=not args.no_rfilter,
        layout_quantile=args.layout_quantile,
        layout_fraction=args.layout_fraction,
        downstream_steps=args.downstream_steps,
        downstream_budgets=budgets,
        seeds=tuple(args.seeds),
    )
    run_demo(config)


__all__ = ('demo_datamodule', 'main', 'run_demo')
