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
    from .data_efficiency import DataEfficiencyResult
    from .demo import DemoConfig

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
    fidelity_rows: list[dict[str, Any]],
    rfilter_summary: Any,
    kept: int,
    generated: int,
    source_note: str,
    study: DataEfficiencyResult,
    batch_size: int,
    budgets: Sequence[int | None],
) -> Path:
    """Write ``report.md`` and ``demo.json`` under ``config.output``.

    Args:
        config: the demo settings (with the stage timings).
        fidelity_rows: mask fidelity per image source.
        rfilter_summary: the R-Filter's summary (``rows``, ``to_markdown()``).
        kept: samples the R-Filter kept into the bank.
        generated: samples generated from training masks.
        source_note: where the downstream runs' synthetic samples came from.
        study: the data-efficiency study.
        batch_size: the downstream batch size.
        budgets: the real-label budgets (None: all).

    Returns:
        Path of ``report.md``.
    """
    from .data_efficiency import budget_label

    steps_run = sorted({r.steps for e in study.experiments.values() for r in e.runs})
    curves = [
        f'[{budget_label(b)} real scenes](downstream/budget_{budget_label(b)}/learning_curves.png)'
        for b in budgets
    ]
    report = config.output / 'report.md'
    rfilter_rows = [dict(row) for row in rfilter_summary.rows]
    rfilter_note = _rfilter_note(rfilter_rows, config.layout_threshold)
    report.write_text(
        '# EarthSynth demo report\n\n'
        'Every number below was measured in this run '
        f'(`earthsynth demo`, device `{config.device}`, {config.steps} training steps of which '
        f'{config.vae_steps} VAE warm-up, {config.image_size} px tiles).\n\n'
        '## Training\n\n![loss curve](loss_curve.png)\n\n'
        f'Diffusers export: `{(config.output / "export").as_posix()}` (loads in '
        '`StableDiffusionControlNetPipeline.from_pretrained`).\n\n'
        '## Generated samples for held-out masks\n\n![samples](samples.png)\n\n'
        'Untrained model with the same seeds: [samples_untrained.png](samples_untrained.png)\n\n'
        '## Do generated images follow their masks?\n\n'
        'A per-pixel classifier fitted on real training images labels the generated images; '
        'mIoU against the condition masks of the held-out scenes. Controls: the untrained '
        "model, and the trained model conditioned on another scene's mask (same prompt and "
        'seed), which shows how much of the score the mask itself earns:\n\n'
        f'{_table(fidelity_rows)}\n\n'
        '## R-Filter\n\n'
        f'{rfilter_summary.to_markdown()}\n\n'
        f'Kept {kept} of {generated} samples generated from training masks into the '
        f'bank `{(config.output / "bank").as_posix()}`. {rfilter_note}\n\n'
        '## Downstream segmentation: how much do synthetic images help, per real label?\n\n'
        f'Synthetic samples {source_note}. TorchGeo `SemanticSegmentationTask` '
        f'({_model_name(config.downstream_model)}, trained from scratch) on '
        f'{", ".join(str(r.real_samples) for r in study.rows if r.arm == "real")} '
        f'real training scenes, batch {batch_size}, constant learning rate, '
        f'{config.downstream_steps} steps each (steps run, read from the '
        f'trainers: {steps_run}), seeds {list(config.seeds)} (the same seed gives each arm the '
        'same initialisation, data order and real subset, so differences are paired). The '
        'score is the test mIoU (IoU per class averaged over the classes present in the test '
        'split; per-class IoU in `downstream/budget_*/results.json`) on held-out scenes that '
        'no training or model selection saw (the validation scenes, a disjoint part of the '
        'held-out split, only draw the validation-loss curves); the bank is made from '
        'training masks only.\n\n'
        f'{study.format_table()}\n\n'
        f'{_verdict(study)}\n\n'
        '![data efficiency](downstream/data_efficiency.png)\n\n'
        f'Learning curves per arm: {", ".join(curves)}.\n\n'
        '## Timings\n\n'
        f'{_table([{"stage": k, "seconds": f"{v:.1f}"} for k, v in config.timings.items()])}\n'
        f'| total | {sum(config.timings.values()):.1f} |\n'
    )
    (config.output / 'demo.json').write_text(
        json.dumps(
            {
                'config': _json_ready(asdict(config)),
                'mask_fidelity': fidelity_rows,
                'rfilter': rfilter_rows,
                'kept': kept,
                'downstream': _json_ready(
                    [{**asdict(r), 'verdict': r.verdict} for r in study.rows]
                ),
                'timings_s': config.timings,
            },
            indent=2,
        )
    )
    return report


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


def _rfilter_note(rows: Sequence[dict[str, Any]], layout_threshold: float) -> str:
    """Which R-Filter rules could drop samples in this run, and which did."""
    # scores are >= 0, so a rule with threshold 0 keeps everything
    inert = {'alignment'} | ({'layout'} if layout_threshold <= 0 else set())
    active = [r['rule'] for r in rows if r.get('enabled') and r['rule'] not in inert | {'total'}]
    dropped = [f'{r["rule"]} {r["dropped"]}' for r in rows if r.get('dropped')]
    return (
        'The tiny CLIP model is random, so it cannot judge alignment: its scores are reported '
        'but its threshold is 0, so the alignment rule cannot drop anything'
        + (' (nor can layout, threshold 0)' if 'layout' in inert else '')
        + f'. Rules that could drop samples in this run: {", ".join(active) or "none"}; '
        f'dropped: {", ".join(dropped) or "nothing"}.'
    )


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
