# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth benchmark``: generators on alignment, accuracy and super-resolution, one table."""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from matplotlib import pyplot as plt
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from torchgeo_earthsynth.datasets import EarthSynthMiniSR, layout
from torchgeo_earthsynth.degradation import RGB_BANDS, upsample
from torchgeo_earthsynth.evaluation.benchmark_config import (
    DSCLORA_ROW,
    ESPCN_ROW,
    SHIPPED_SOURCE,
    SHUFFLED_ROW,
    BenchmarkConfig,
    GeneratorSpec,
    load_benchmark_config,
)
from torchgeo_earthsynth.evaluation.benchmark_report import (
    BenchmarkResult,
    BenchmarkRow,
    plot_classifier_curves,
    random_features,
    write_benchmark,
)
from torchgeo_earthsynth.evaluation.benchmark_verdict import verdict
from torchgeo_earthsynth.evaluation.results import RunResult
from torchgeo_earthsynth.metrics import ClipScorer, fid, psnr, ssim, train_clip
from torchgeo_earthsynth.models import ESPCN, fit_sr_baseline, train_dsclora
from torchgeo_earthsynth.synthesis.superres import super_resolve
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

__all__ = ('main', 'run_benchmark')

_DOWNSTREAM_DATA = 'torchgeo_earthsynth.datamodules.downstream.MiniClassificationDataModule'


def _pairs(dataset: EarthSynthMiniSR, count: int | None) -> dict[str, Any]:
    """The first ``count`` pairs of a dataset, stacked."""
    subset = Subset(dataset, range(min(count or len(dataset), len(dataset))))
    batches = list(DataLoader(subset, batch_size=64))
    return {
        key: (
            torch.cat([b[key] for b in batches])
            if isinstance(batches[0][key], Tensor)
            else [v for b in batches for v in b[key]]
        )
        for key in ('image', 'low_res', 'mask', 'prompt', 'metadata')
    }


def _train_tiny_sr(
    spec: GeneratorSpec, config: BenchmarkConfig, train: Subset[Any], bands: int, scale: int
) -> Synthesizer:
    """A tiny ``SuperResolutionTask``, trained on the benchmark's training pairs if asked."""
    from lightning.pytorch import Trainer

    from torchgeo_earthsynth.lightning_modules import SuperResolutionTask

    size = int(train[0]['image'].shape[-1])
    task = SuperResolutionTask(
        image_size=size,
        low_res_channels=bands,
        scale=scale,
        lr=1e-3,
        vae_warmup_steps=spec.vae_warmup_steps,
        val_num_samples=0,
        seed=config.seed,
    )
    if spec.train_steps:
        loader = DataLoader(
            train,
            batch_size=config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
        trainer = Trainer(
            max_steps=spec.vae_warmup_steps + spec.train_steps,
            accelerator=config.device,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=config.progress,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(task, loader)
    task = task.to(config.device).eval()
    synth: Synthesizer = task.synthesizer(spec.num_inference_steps, spec.guidance_scale)
    return synth


def _synthesizer(
    spec: GeneratorSpec, config: BenchmarkConfig, train: Subset[Any], bands: int, scale: int
) -> Synthesizer:
    size = int(train[0]['image'].shape[-1])
    options: dict[str, Any] = {
        'num_inference_steps': spec.num_inference_steps,
        'guidance_scale': spec.guidance_scale,
        'batch_size': config.batch_size,
    }
    match spec.source:
        case 'tiny-sr':
            return _train_tiny_sr(spec, config, train, bands, scale)
        case 'tiny-earthsynth':
            return Synthesizer.tiny(config.seed, size, 'earthsynth', **options)
        case 'tiny-diffusionsat':
            return Synthesizer.tiny(config.seed, size, 'diffusionsat', **options)
        case source if source == SHIPPED_SOURCE:
            from torchgeo_earthsynth.models.shipped import shipped_generator

            return Synthesizer.from_pretrained(shipped_generator(), device=config.device, **options)
    return Synthesizer.from_pretrained(spec.source, base=spec.base, device=config.device, **options)


def _kind(synth: Synthesizer) -> str:
    if synth.takes('low_res'):
        return 'diffusion SR'
    return 'mask-to-image' if synth.takes('mask') else 'text-to-image'


def _generate(synth: Synthesizer, pairs: Mapping[str, Any], scale: int, seed: int) -> Tensor:
    """One image per scene: from its low-res view, its mask or its prompt (and metadata)."""
    prompts = list(pairs['prompt'])
    seeds = [seed + i for i in range(len(prompts))]
    metadata = pairs['metadata'] if synth.takes('metadata') else None
    if synth.takes('low_res'):
        return super_resolve(synth, pairs['low_res'], prompts, scale, seeds, metadata)
    masks = pairs['mask'] if synth.takes('mask') else None
    size = (int(pairs['image'].shape[-2]), int(pairs['image'].shape[-1]))
    return synth.generate(masks, prompts, seeds, size, metadata=metadata)


def _write_bank(folder: Path, images: Tensor, masks: Tensor, prompts: Sequence[str]) -> Path:
    """Images with their scenes' masks in the EarthSynth-180K layout (the harness's bank)."""
    records: list[dict[str, Any]] = []
    split = folder / 'train'
    for i, (image, mask) in enumerate(zip(images, masks)):
        pixels = image.clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()
        stem = f'BENCH_{i:05d}'
        for record in layout.write_sample(split, stem, pixels, mask.byte().numpy(), False):
            records.append({**record, 'text': prompts[i]})
    layout.write_jsonl(layout.jsonl_path(split), records)
    return folder


def _accuracy(
    config: BenchmarkConfig, name: str, bank: Path | None, train_count: int
) -> list[RunResult]:
    """The harness's classifier runs (one per seed) trained on real data or on a bank."""
    if config.classification is None:
        return []
    from torchgeo_earthsynth.evaluation.harness import run_experiment

    overrides = copy.deepcopy(dict(config.classification))
    data_args = {
        'root': config.data.get('root'),
        'seed': config.data.get('seed', 0),
        'tile_size': config.data.get('size', 64),
        'num_train': config.data.get('num_train', 256),
        'num_val': config.data.get('num_val', 64),
        **overrides.pop('data', {}),
    }
    slug = ''.join(c if c.isalnum() else '_' for c in name)
    experiment = {
        'task': 'classification',
        'data': {'class_path': _DOWNSTREAM_DATA, 'init_args': data_args},
        'arms': ['real'] if bank is None else ['synthetic-only'],
        'bank': None if bank is None else str(bank),
        'train_subset': train_count,  # the real arm sees as many scenes as a bank holds
        'output': str(Path(config.output) / 'classification' / slug),
        'progress': False,
        **overrides,
    }
    return run_experiment(experiment).runs


def _clip_scorer(config: BenchmarkConfig, train_set: EarthSynthMiniSR) -> ClipScorer:
    """The configured CLIP, or the tiny one trained on every training scene and its prompt."""
    if config.clip_model == 'tiny':
        return ClipScorer.tiny(config.seed)
    if config.clip_model == 'trained':
        scenes = _pairs(train_set, None)
        return train_clip(
            scenes['image'].float(),
            scenes['prompt'],
            steps=config.clip_steps,
            seed=config.seed,
            device=config.device,
            progress=config.progress,
        )
    return ClipScorer.from_pretrained(config.clip_model, config.clip_pretrained)


def _other_prompts(prompts: Sequence[str]) -> list[str]:
    """Each scene's prompt replaced by the next scene's that differs from it (cyclically)."""
    others = []
    for i, prompt in enumerate(prompts):
        following = [*prompts[i + 1 :], *prompts[:i]]
        others.append(next((p for p in following if p != prompt), prompt))
    return others


def run_benchmark(
    config: BenchmarkConfig | Mapping[str, Any] | str | Path,
) -> BenchmarkResult:
    """Measure every method on the same scenes and write the table and the plot.

    Methods: ``real`` (the reference), ``bicubic`` (the floor), the regression baseline
    (:class:`~torchgeo_earthsynth.models.ESPCN`, trained here on the training pairs), DSCLoRA
    (:func:`~torchgeo_earthsynth.models.train_dsclora`, the brief's reference, trained here
    on the same pairs) and
    each generator of ``config.generators``. Each renders one image per held-out scene
    (from its low-res view, mask or prompt and metadata, whichever it takes) and per
    training scene. On the held-out images: CLIP score against the scene's prompt, PSNR and
    SSIM against the real scene (BT.601 Y, border of ``crop_border`` cropped), FID against
    the real scenes (the ``real`` row: training vs held-out real scenes). Accuracy: the
    downstream harness's classifier (:func:`~torchgeo_earthsynth.evaluation.run_experiment`)
    trained on the method's images of the training scenes (``synthetic-only``; ``real``:
    the real scenes) and tested on real held-out scenes. Every number is measured in the
    run.

    Args:
        config: a :class:`BenchmarkConfig`, a mapping of its fields, or a YAML file.

    Returns:
        The :class:`BenchmarkResult` (also written to ``config.output``).

    Raises:
        ValueError: if the config is invalid.

    .. versionadded:: 0.3
    """
    config = load_benchmark_config(config)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    train_set = EarthSynthMiniSR(split='train', **config.data)
    val_set = EarthSynthMiniSR(split='val', **config.data)
    train_count = min(config.train_scenes or len(train_set), len(train_set))
    train_subset = Subset(train_set, range(train_count))
    train, held_out = _pairs(train_set, train_count), _pairs(val_set, config.eval_scenes)
    scale, bands = train_set.scale, train_set.num_bands
    size = (int(held_out['image'].shape[-2]), int(held_out['image'].shape[-1]))
    crop = scale if config.crop_border is None else config.crop_border
    clip = _clip_scorer(config, train_set)
    feature: Literal[2048] | nn.Module = (
        random_features(config.seed) if config.fid_feature == 'random' else 2048
    )

    torch.manual_seed(config.seed)
    baseline = ESPCN(bands, scale).to(config.device)
    start = time.perf_counter()
    loader = DataLoader(
        train_subset,
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    fit_sr_baseline(baseline, loader, config.baseline_steps, config.baseline_lr)
    baseline_seconds = time.perf_counter() - start
    # DSCLoRA (the brief's reference SOTA): teacher, student and distilled adapters, each
    # trained as many steps as ESPCN on the same pairs.
    start = time.perf_counter()
    dsclora, _ = train_dsclora(
        loader,
        bands,
        scale,
        config.baseline_steps,
        config.baseline_lr,
        rgb_bands=RGB_BANDS,
        device=config.device,
    )
    dsclora_seconds = time.perf_counter() - start

    def bicubic(pairs: Mapping[str, Any]) -> Tensor:
        return upsample(pairs['low_res'][:, list(RGB_BANDS)], size)

    def regression(pairs: Mapping[str, Any], model: nn.Module = baseline) -> Tensor:
        with torch.no_grad():
            low_res = pairs['low_res'].to(config.device)
            return torch.cat([model(b) for b in low_res.split(config.batch_size)]).cpu()

    def distilled(pairs: Mapping[str, Any]) -> Tensor:
        return regression(pairs, dsclora)

    methods: list[tuple[str, str, Any]] = [
        ('real', 'reference', None),
        ('bicubic', 'interpolation', bicubic),
        (ESPCN_ROW, 'regression SR', regression),
        (DSCLORA_ROW, 'regression SR', distilled),
    ]
    for spec in config.specs:
        synth = _synthesizer(spec, config, train_subset, bands, scale)

        def generated(pairs: Mapping[str, Any], synth: Synthesizer = synth) -> Tensor:
            offset = 0 if pairs is held_out else 1_000_000
            return _generate(synth, pairs, scale, config.seed * 10_000_000 + offset).cpu()

        methods.append((spec.name, _kind(synth), generated))

    rows = []
    curves: dict[str, list[RunResult]] = {}
    bar = tqdm(methods, desc='benchmark', disable=not config.progress)
    for name, kind, render in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        real_row = render is None
        images = held_out['image'] if real_row else render(held_out).float()
        row = BenchmarkRow(name, kind)
        _measure(row, 'clip_score', clip.score(images, held_out['prompt']))
        if real_row:
            shuffled = BenchmarkRow(SHUFFLED_ROW, 'reference')
            _measure(shuffled, 'clip_score', clip.score(images, _other_prompts(held_out['prompt'])))
        else:
            for key, metric in (('psnr_y', psnr), ('ssim_y', ssim)):
                values = metric(
                    images, held_out['image'], y_channel=True, crop_border=crop, reduction='none'
                )
                _measure(row, key, values)
        reference = train['image'] if real_row else images
        row.fid = fid(
            held_out['image'], reference, feature=feature, weights_path=config.fid_weights
        )
        bank = None
        if not real_row and config.classification is not None:
            bank = _write_bank(
                output / 'banks' / name.replace(' ', '_'),
                render(train).float(),
                train['mask'],
                train['prompt'],
            )
        runs = _accuracy(config, name, bank, train_count)
        if runs:
            curves[name] = runs
            _measure(row, 'accuracy', torch.tensor([run.value for run in runs]))
        row.seconds = time.perf_counter() - start
        if render is regression:
            row.seconds += baseline_seconds
        if render is distilled:
            row.seconds += dsclora_seconds
        rows.append(row)
        if real_row:
            rows.append(shuffled)
    result = BenchmarkResult(rows, config.to_dict(), scale=scale, bands=bands, crop_border=crop)
    result.verdict = verdict(result)
    result.files = write_benchmark(result, output)
    if curves:
        figure = plot_classifier_curves(curves)
        result.files['curves'] = output / 'benchmark_curves.png'
        figure.savefig(result.files['curves'], dpi=100)
        plt.close(figure)
    return result


def _measure(row: BenchmarkRow, key: str, values: Tensor) -> None:
    """Set a row's metric to the mean of its per-sample values, and keep the samples."""
    samples = [float(v) for v in values.detach().double().cpu()]
    row.samples[key] = samples
    setattr(row, key, sum(samples) / len(samples))


def main(argv: Sequence[str] | None = None) -> None:
    """``earthsynth benchmark --config <yaml> [--field value ...]``.

    Args:
        argv: command-line arguments after ``benchmark``.

    .. versionadded:: 0.3
    """
    from torchgeo_earthsynth.evaluation.benchmark_config import _parser

    parser = _parser()
    try:
        config = load_benchmark_config(list(sys.argv[1:] if argv is None else argv))
        result = run_benchmark(config)
    except ValueError as error:
        parser.error(str(error))
    print(result.markdown())
    print(f'report: {result.files["csv"].parent}')
