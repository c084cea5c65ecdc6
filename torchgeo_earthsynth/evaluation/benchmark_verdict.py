# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The benchmark's answer to the brief: one verdict per task, with the intervals behind it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from torchgeo_earthsynth.evaluation.benchmark_config import SHUFFLED_ROW
from torchgeo_earthsynth.evaluation.data_efficiency import interval95

if TYPE_CHECKING:
    from torchgeo_earthsynth.evaluation.benchmark_report import BenchmarkResult, BenchmarkRow

__all__ = ('PAPER_SCALE', 'compare', 'verdict')

#: Generator kinds (the rows a verdict judges).
_GENERATED: Final = ('diffusion SR', 'mask-to-image', 'text-to-image')

#: What would change the answer, and how to measure it.
PAPER_SCALE: Final = (
    'At paper scale: `uv run earthsynth benchmark --config configs/benchmark_paper.yaml` '
    '(ViT-B-32 CLIP with OpenAI weights, or `clip_pretrained` a RemoteCLIP checkpoint path; '
    'Inception FID; the released DiffusionSat SR ControlNet '
    '`controlnet_sd21_md7norm_fmow_condres256` over `finetune_sd21_sn-satlas-fmow_snr5_md7norm_'
    'bs64`, EarthSynth `jaychempan/EarthSynth`, and `tiny-sr` replaced by a trained export). '
    'Those checkpoints are not on this machine (no Hub access), so this verdict is about the '
    "mini corpus and the tiny models trained in the run, not about the papers' models."
)


def compare(
    row: BenchmarkRow, other: BenchmarkRow, metric: str
) -> tuple[float, float, float] | None:
    """Mean and 95% interval of ``row - other`` paired by scene (or by seed for accuracy).

    Args:
        row: a row with per-scene (per-seed) ``samples[metric]``.
        other: the row compared with, over the same scenes (seeds).
        metric: ``clip_score``, ``psnr_y``, ``ssim_y`` or ``accuracy``.

    Returns:
        ``(mean, low, high)`` (bounds NaN for one pair), or None when either row lacks the
        metric or their samples differ in number.
    """
    mine, theirs = row.samples.get(metric), other.samples.get(metric)
    if not mine or not theirs or len(mine) != len(theirs):
        return None
    return interval95([a - b for a, b in zip(mine, theirs)])


def _interval(values: tuple[float, float, float] | None, digits: int = 3) -> str:
    if values is None:
        return 'n/a'
    mean, low, high = values
    if math.isnan(low):
        return f'{mean:+.{digits}g} (one sample, no interval)'
    return f'{mean:+.{digits}g} [{low:+.{digits}g}, {high:+.{digits}g}]'


def _word(values: tuple[float, float, float] | None, above: str, below: str, same: str) -> str:
    """``above``/``below`` when the 95% interval excludes 0, else ``same``."""
    if values is None or math.isnan(values[1]):
        return 'unclear against'
    if values[1] > 0:
        return above
    return below if values[2] < 0 else same


def _alignment(rows: dict[str, BenchmarkRow], generated: Sequence[BenchmarkRow]) -> list[str]:
    real, shuffled = rows.get('real'), rows.get(SHUFFLED_ROW)
    if real is None or shuffled is None or 'clip_score' not in real.samples:
        return ['- **Alignment**: not measured.']
    floor = compare(real, shuffled, 'clip_score')
    if _word(floor, 'yes', 'no', 'no') != 'yes':
        return [
            '- **Alignment**: the CLIP scorer does not tell real prompts from shuffled ones '
            f'(real - shuffled {_interval(floor)}), so its column answers nothing here.'
        ]
    lines = [
        '- **Alignment** (CLIP score, paired by held-out scene; the scorer separates real '
        f'prompts from shuffled ones by {_interval(floor)}):'
    ]
    for row in generated:
        to_real, to_floor = compare(row, real, 'clip_score'), compare(row, shuffled, 'clip_score')
        if to_real is None or to_floor is None:
            continue
        lines.append(
            f'  - {row.method}: {_word(to_real, "above", "below", "not separable from")} real '
            f'images ({_interval(to_real)}), '
            f'{_word(to_floor, "above", "below", "no better than")} the shuffled-prompt floor '
            f'({_interval(to_floor)}).'
        )
    return lines


def _classification(rows: dict[str, BenchmarkRow], trained: Sequence[BenchmarkRow]) -> list[str]:
    real = rows.get('real')
    if real is None or 'accuracy' not in real.samples:
        return ['- **Classification**: not measured.']
    mean, low, high = interval95(real.samples['accuracy'])
    lines = [
        '- **Classification** (accuracy on real held-out scenes of a classifier trained only '
        f"on the row's images, paired by seed): real scenes {mean:.3f} [{low:.3f}, {high:.3f}]."
    ]
    for row in trained:
        to_real = compare(row, real, 'accuracy')
        if to_real is None:
            continue
        lines.append(
            f'  - {row.method}: {_word(to_real, "better than", "worse than", "not separable from")}'
            f' real scenes ({_interval(to_real)}).'
        )
    return lines


def _super_resolution(rows: dict[str, BenchmarkRow], methods: Sequence[BenchmarkRow]) -> list[str]:
    bicubic = rows.get('bicubic')
    if bicubic is None or 'psnr_y' not in bicubic.samples:
        return ['- **Super-resolution**: not measured.']
    lines = ['- **Super-resolution** (PSNR-Y and SSIM-Y against bicubic, paired by scene):']
    for row in methods:
        psnr, ssim = compare(row, bicubic, 'psnr_y'), compare(row, bicubic, 'ssim_y')
        if psnr is None or ssim is None:
            continue
        lines.append(
            f'  - {row.method}: {_word(psnr, "above", "below", "level with")} bicubic in PSNR '
            f'({_interval(psnr)} dB), {_word(ssim, "above", "below", "level with")} in SSIM '
            f'({_interval(ssim)}).'
        )
    return lines


def verdict(result: BenchmarkResult) -> list[str]:
    """Markdown lines answering the brief per task, each with the intervals it rests on.

    "above"/"below" are said only where the paired 95% interval excludes 0.

    Args:
        result: a benchmark result whose rows carry per-scene and per-seed samples.

    Returns:
        The lines of the verdict section (its heading first).
    """
    rows = {row.method: row for row in result.rows}
    generated = [row for row in result.rows if row.kind in _GENERATED]
    upsampled = [row for row in result.rows if row.kind != 'reference' and row.method != 'bicubic']
    upsampled = [row for row in upsampled if 'psnr_y' in row.samples]
    trained = [row for row in result.rows if row.kind != 'reference']
    return [
        '## Verdict: is synthetic data ready for image recognition here?',
        '',
        *_alignment(rows, generated),
        *_classification(rows, trained),
        *_super_resolution(rows, upsampled),
        '',
        PAPER_SCALE,
    ]
