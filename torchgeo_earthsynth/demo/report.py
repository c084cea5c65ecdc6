# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The demo's report: ``report.md``, ``demo.json`` and the loss-curve figure."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import pandas as pd

if TYPE_CHECKING:
    from torchgeo_earthsynth.demo.config import DemoConfig
    from torchgeo_earthsynth.demo.stages import BankResult
    from torchgeo_earthsynth.evaluation.data_efficiency import DataEfficiencyResult
    from torchgeo_earthsynth.metrics import GeneratorFidelity

__all__ = ('loss_curve', 'write_report')


def loss_curve(metrics_csv: Path, out: Path) -> Path:
    """Plot the VAE, training and validation losses of ``metrics_csv`` into ``out``."""
    frame = pd.read_csv(metrics_csv)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for column, label in (
        ('vae_loss', 'VAE warm-up (reconstruction)'),
        ('train_loss', 'diffusion loss (train)'),
        ('val_loss', 'diffusion loss (val)'),
    ):
        if column in frame:
            rows = frame[['step', column]].dropna()
            if len(rows):
                ax.plot(
                    rows['step'],
                    rows[column],
                    marker='.' if column == 'val_loss' else None,
                    label=label,
                )
    ax.set_xlabel('step')
    ax.set_ylabel('loss')
    ax.set_yscale('log')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return '(none)'
    keys = list(rows[0])
    lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    for row in rows:
        cells = [f'{v:.3f}' if isinstance(v, float) else str(v) for v in row.values()]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_report(
    config: DemoConfig,
    *,
    generator_note: str,
    fidelity: GeneratorFidelity,
    bank: BankResult,
    study: DataEfficiencyResult,
    budgets: Sequence[int | None],
    train_classes: dict[str, int],
) -> Path:
    """Write ``report.md`` and ``demo.json`` under ``config.output``.

    Args:
        config: the demo settings (with the stage timings).
        generator_note: where the generator came from.
        fidelity: mask fidelity of the generators on held-out masks.
        bank: what went into the synthetic bank and what R-Filter dropped.
        study: the data-efficiency study.
        budgets: the real-label budgets (None: all).
        train_classes: training scenes holding each class (the corpus' long tail).

    Returns:
        Path of ``report.md``.
    """
    from torchgeo_earthsynth.evaluation.data_efficiency import budget_label

    steps_run = sorted({r.steps for e in study.experiments.values() for r in e.runs})
    curves = [
        f'[{budget_label(b)} real scenes](downstream/budget_{budget_label(b)}/learning_curves.png)'
        for b in budgets
    ]
    report = config.output / 'report.md'
    rfilter_rows = [dict(row) for row in bank.summary.rows] if bank.summary else []
    per_class = study.per_class()
    training = (
        f'Training: see `{(config.output / "train").as_posix()}` and the loss curve '
        '![loss curve](loss_curve.png)'
        if config.train_generator
        else 'Its recipe: `configs/mini_generator.yaml` (see the docs for its log).'
    )
    report.write_text(
        '# EarthSynth demo report\n\n'
        'Every number below was measured in this run '
        f'(`earthsynth demo`, device `{config.device}`, {config.image_size} px tiles, '
        f'{"long-tailed " if config.long_tail else ""}mini corpus).\n\n'
        '## The corpus\n\n'
        'Training scenes holding each class (rarest first):\n\n'
        f'{_table([train_classes])}\n\n'
        f'## The generator\n\nTiny EarthSynth (ControlNet + UNet), {generator_note}. {training}\n\n'
        '## Generated samples for held-out masks\n\n![samples](samples.png)\n\n'
        'Untrained model with the same seeds: [samples_untrained.png](samples_untrained.png)\n\n'
        '## Do generated images follow their masks?\n\n'
        'A per-pixel classifier fitted on real training images labels the generated images; '
        'mIoU against the condition masks of the held-out scenes. Controls: the untrained '
        "model, and the trained model conditioned on another scene's mask (same prompt and "
        'seed), which shows how much of the score the mask itself earns:\n\n'
        f'{_table(fidelity.rows())}\n\n'
        '## The synthetic bank and R-Filter\n\n'
        f'{_bank_note(config, bank)}\n\n'
        f'{bank.summary.to_markdown() if bank.summary else ""}\n\n'
        'Generated layouts holding each class, and how many of them R-Filter kept:\n\n'
        f'{_table([{"": "generated", **bank.drawn_classes}, {"": "kept", **_kept(bank)}])}\n\n'
        f'{_dropped_note(bank)}\n\n'
        '## Downstream segmentation: how much do synthetic images help, per real label?\n\n'
        'Synthetic samples are drawn from the R-Filtered bank, p = 0.5. TorchGeo '
        f'`SemanticSegmentationTask` ({_model_name(config.downstream_model)}, trained from '
        f'scratch) on {", ".join(str(r.real_samples) for r in study.rows if r.arm == "real")} '
        f'real training scenes, batch {config.downstream_batch_size}, constant learning rate, '
        f'{config.downstream_steps} steps each (steps run, read from the '
        f'trainers: {steps_run}), seeds {list(config.seeds)} (the same seed gives each arm the '
        'same initialisation, data order and real subset, so differences are paired). The '
        'score is the test mIoU (IoU per class averaged over the classes present in the test '
        'split) on held-out scenes that no training or model selection saw (the validation '
        'scenes, a disjoint part of the held-out split, only draw the validation-loss '
        'curves); the bank is made from training masks only.\n\n'
        f'{study.format_table()}\n\n'
        f'{_verdict(study)}\n\n'
        '![data efficiency](downstream/data_efficiency.png)\n\n'
        'Test IoU per class (mean over seeds; rare classes are those in few training scenes, '
        'see the corpus table):\n\n'
        f'{_table(per_class)}\n\n'
        f'Learning curves per arm: {", ".join(curves)}.\n\n'
        '## Timings\n\n'
        f'{_table([{"stage": k, "seconds": f"{v:.1f}"} for k, v in config.timings.items()])}\n'
        f'| total | {sum(config.timings.values()):.1f} |\n'
    )
    (config.output / 'demo.json').write_text(
        json.dumps(
            _json_ready(
                {
                    'config': asdict(config),
                    'train_classes': train_classes,
                    'mask_fidelity': fidelity.rows(),
                    'bank': {
                        'generated': bank.generated,
                        'kept': bank.kept,
                        'layout_threshold': bank.layout_threshold,
                        'drawn_classes': bank.drawn_classes,
                        'kept_classes': bank.kept_classes,
                        'dropped': bank.dropped,
                    },
                    'rfilter': rfilter_rows,
                    'downstream': [{**asdict(r), 'verdict': r.verdict} for r in study.rows],
                    'per_class_iou': per_class,
                    'timings_s': config.timings,
                }
            ),
            indent=2,
        )
    )
    return report


def _kept(bank: BankResult) -> dict[str, int]:
    """Kept samples per class, in the generated table's column order (0 where none)."""
    return {name: bank.kept_classes.get(name, 0) for name in bank.drawn_classes}


def _bank_note(config: DemoConfig, bank: BankResult) -> str:
    """How the bank's layouts were drawn and how R-Filter was set."""
    draws = {
        'uniform': 'drawn uniformly from the training masks',
        'balanced': 'drawn from the training masks by the inverse frequency of their rarest '
        'class (category balance)',
        'cf-comp': 'drawn from the training masks by the inverse frequency of their rarest '
        "class, each given one category region of a rarity-weighted donor (CF-Comp's "
        'region paste), prompts recomputed',
    }
    note = f'{bank.generated} layouts {draws[config.bank_draw]}. '
    if bank.layout_threshold is None:
        return note + f'R-Filter was off: all {bank.kept} samples went into the bank.'
    return note + (
        f'R-Filter kept {bank.kept} of {bank.generated}. Its layout threshold, mIoU >= '
        f'{bank.layout_threshold:.3f}, is {config.layout_fraction:g} x the '
        f'{config.layout_quantile:g} quantile of the layout scores of the real training '
        'scenes (each real image against its own mask): a dropped sample follows its mask '
        'far worse than most real scenes do. The tiny CLIP '
        'model is random, so it cannot judge alignment: its scores are reported but its '
        'threshold is 0.'
    )


def _dropped_note(bank: BankResult) -> str:
    """Which samples were dropped and why (the first ten)."""
    if not bank.dropped:
        return 'Nothing was dropped.'
    shown = '; '.join(f'#{i}: {why}' for i, why in bank.dropped[:10])
    more = f' (and {len(bank.dropped) - 10} more)' if len(bank.dropped) > 10 else ''
    return f'Dropped {len(bank.dropped)}: {shown}{more}.'


def _model_name(model: dict[str, Any]) -> str:
    """``U-Net/resnet18``, ``FCN, 32 filters``: the downstream model as the report names it."""
    name = str(model.get('model', 'unet'))
    if name == 'fcn':
        return f'FCN, {model.get("num_filters", 64)} filters'
    return f'{name.upper() if name == "unet" else name}/{model.get("backbone", "resnet18")}'


def _json_ready(value: Any) -> Any:
    """Paths as strings, tuples as lists, NaN as None (JSON has no NaN); numbers stay numbers."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _verdict(study: DataEfficiencyResult) -> str:
    """Plain words on where synthetic data helps, hurts or cannot be told from noise."""
    words = []
    for row in study.rows:
        if row.arm == 'real' or row.diff is None:
            continue
        words.append(
            f'{row.arm} at {row.real_samples} real scenes: {row.diff:+.3f} '
            f'[{row.diff_low:+.3f}, {row.diff_high:+.3f}] -> {row.verdict or "one seed"}'
        )
    return (
        'Paired differences to real-only (95% interval over seeds; "helps"/"hurts" only when '
        'the interval excludes 0): ' + '; '.join(words) + '. Where synthetic data does not '
        'help, the likely causes are, in order: generator quality (a synthetic image that '
        'does not follow its mask is a mislabelled pair: see the fidelity table against its '
        'shuffled-mask control), the label noise that follows from it, and the regime (a '
        'small segmenter trained from scratch, few steps, 32 px). Synthetic-only training '
        'measures how far the synthetic pairs are from real ones.'
    )
