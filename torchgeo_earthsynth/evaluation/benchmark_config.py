# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The ``earthsynth benchmark`` config: generators, data, metrics and the harness settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonargparse import (  # type: ignore[attr-defined]
    ActionConfigFile,
    ArgumentError,
    ArgumentParser,
    Namespace,
)

__all__ = ('BenchmarkConfig', 'GeneratorSpec', 'load_benchmark_config')

#: ``GeneratorSpec.source`` values that build an untrained tiny model (nothing downloaded).
TINY_SOURCES = ('tiny-sr', 'tiny-earthsynth', 'tiny-diffusionsat')
#: ``GeneratorSpec.source`` of the tiny EarthSynth generator shipped in the package.
SHIPPED_SOURCE = 'shipped-earthsynth'

#: Rows every benchmark has (generator names must differ from them).
SHUFFLED_ROW = 'real, shuffled prompts'
ESPCN_ROW = 'regression (ESPCN)'
DSCLORA_ROW = 'DSCLoRA (SPAN + ConvLoRA, distilled)'


@dataclass
class GeneratorSpec:
    """One generator of the benchmark.

    Attributes:
        name: its row in the table.
        source: a folder or hub id ``Synthesizer.from_pretrained`` loads (our exports,
            released EarthSynth/DiffusionSat folders), or a tiny model built in code:
            ``tiny-sr`` (our super-resolution ControlNet), ``tiny-earthsynth`` (mask
            ControlNet), ``tiny-diffusionsat`` (text + metadata), or ``shipped-earthsynth``
            (the tiny EarthSynth generator shipped in the package, trained on the mini
            corpus by ``configs/mini_generator.yaml``).
        base: the base ``Synthesizer.from_pretrained`` needs (e.g. the DiffusionSat
            checkpoint of their super-resolution ControlNet).
        train_steps: ``tiny-sr`` only: train it in the run on the benchmark's training
            pairs (``SuperResolutionTask``) for this many diffusion steps first (0: untrained).
        vae_warmup_steps: ``tiny-sr`` with ``train_steps``: VAE warm-up steps before them.
        num_inference_steps: sampler steps.
        guidance_scale: classifier-free guidance (1: off).
    """

    name: str
    source: str
    base: str | None = None
    train_steps: int = 0
    vae_warmup_steps: int = 0
    num_inference_steps: int = 20
    guidance_scale: float = 1.0


@dataclass
class BenchmarkConfig:
    """What ``earthsynth benchmark`` measures; every field has a YAML key of the same name.

    Attributes:
        generators: the generators compared (each a :class:`GeneratorSpec` mapping).
        data: init args of :class:`~torchgeo_earthsynth.datasets.EarthSynthMiniSR` (``root``,
            ``size``, ``scale``, ``bands``, ``noise_std``, ``num_train``, ``num_val``, ``seed``):
            the scenes, their low-res views and prompts.
        eval_scenes: held-out (``val``) scenes evaluated (None: all).
        train_scenes: training scenes each generator renders for the classification arm and
            the regression baseline trains on (None: all).
        baseline_steps: training steps of the regression baseline (ESPCN).
        baseline_lr: its learning rate.
        clip_model: open_clip model name for the CLIP score, ``trained`` (the tiny open_clip
            model trained in the run on every training scene and its prompt:
            :func:`~torchgeo_earthsynth.metrics.train_clip`, for machines without CLIP
            weights) or ``tiny`` (random weights, tests only).
        clip_steps: training steps of the ``trained`` CLIP.
        clip_pretrained: open_clip pretrained tag or checkpoint path (e.g. a remote-sensing
            CLIP); ignored for ``tiny`` and ``trained``.
        fid_feature: ``inception`` (torch-fidelity's InceptionV3, ``fid_weights`` or the
            torch hub cache; never downloaded) or ``random`` (a fixed random conv net: for
            tiny setups, not comparable with published FIDs).
        fid_weights: path of the InceptionV3 weights.
        crop_border: pixels cropped from each side for PSNR/SSIM (None: the scale, as SR
            papers).
        classification: overrides of the downstream harness's config
            (:class:`~torchgeo_earthsynth.evaluation.ExperimentConfig`: ``model``,
            ``trainer``, ``seeds``, ``train_subset``, ``data``); None skips accuracy.
        output: folder for ``benchmark.csv``, ``benchmark.md``, ``benchmark.json`` and
            ``benchmark.png``.
        batch_size: images per generation/metric batch.
        device: where generators run.
        seed: seed of sampling and of the baseline's initialisation.
        progress: show progress.

    .. versionadded:: 0.3
    """

    generators: list[dict[str, Any]] = field(default_factory=list)  # or GeneratorSpec
    data: dict[str, Any] = field(default_factory=dict)
    eval_scenes: int | None = None
    train_scenes: int | None = None
    baseline_steps: int = 300
    baseline_lr: float = 1e-3
    clip_model: str = 'ViT-B-32'
    clip_pretrained: str | None = 'openai'
    clip_steps: int = 600
    fid_feature: Literal['inception', 'random'] = 'inception'
    fid_weights: str | None = None
    crop_border: int | None = None
    classification: dict[str, Any] | None = field(default_factory=dict)
    output: str = 'outputs/benchmark'
    batch_size: int = 16
    device: str = 'cpu'
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        """Check the fields and turn ``generators`` into :class:`GeneratorSpec`.

        Raises:
            ValueError: naming the field and what was expected.
        """
        specs: list[GeneratorSpec] = []
        entries: list[Any] = list(self.generators)
        for i, entry in enumerate(entries):
            if isinstance(entry, GeneratorSpec):
                specs.append(entry)
                continue
            if not isinstance(entry, Mapping) or 'name' not in entry or 'source' not in entry:
                raise ValueError(
                    f'generators[{i}]: expected a mapping with name and source, got {entry!r}'
                )
            try:
                specs.append(GeneratorSpec(**entry))
            except TypeError as error:
                raise ValueError(f'generators[{i}]: {error}') from error
        names = [spec.name for spec in specs]
        reserved = {'real', SHUFFLED_ROW, 'bicubic', 'regression (ESPCN)', DSCLORA_ROW}
        if len(set(names)) != len(names) or reserved & set(names):
            raise ValueError(
                f'generators: names must be distinct and not {sorted(reserved)}, got {names}'
            )
        for spec in specs:
            if spec.train_steps and spec.source != 'tiny-sr':
                raise ValueError(
                    f'generators: {spec.name}: train_steps is for source tiny-sr only '
                    f'(got source {spec.source!r})'
                )
        self.specs = specs
        for name in ('eval_scenes', 'train_scenes'):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f'{name} must be >= 2 (FID needs two images), got {value}')
        for name in ('baseline_steps', 'batch_size', 'clip_steps'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')

    def to_dict(self) -> dict[str, Any]:
        """The config as written into ``benchmark.json``."""
        values = asdict(self)
        values['generators'] = [asdict(spec) for spec in self.specs]
        return values


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog='earthsynth benchmark',
        description='Compare generators on text-image alignment (CLIP score), downstream '
        'classification accuracy and super-resolution PSNR/SSIM/FID against bicubic and a '
        'regression baseline; one table and one plot.',
        exit_on_error=False,
    )
    parser.add_argument('--config', action=ActionConfigFile, help='benchmark YAML')
    parser.add_class_arguments(BenchmarkConfig, fail_untyped=True, instantiate=False)
    return parser


def _from_namespace(cfg: Namespace) -> BenchmarkConfig:
    values = cfg.as_dict()
    values.pop('config', None)
    values.pop('__path__', None)
    return BenchmarkConfig(**values)


def load_benchmark_config(
    source: BenchmarkConfig | Mapping[str, Any] | str | Path | list[str],
) -> BenchmarkConfig:
    """Read and check a benchmark config.

    Args:
        source: a config, a mapping of its fields, a YAML file, or command-line arguments.

    Returns:
        The checked :class:`BenchmarkConfig`.

    Raises:
        ValueError: if a field is unknown, has the wrong type, or a value is invalid.
    """
    if isinstance(source, BenchmarkConfig):
        return source
    parser = _parser()
    try:
        if isinstance(source, Mapping):
            cfg = parser.parse_object(dict(source))
        elif isinstance(source, list):
            cfg = parser.parse_args(source)
        else:
            if not Path(source).is_file():
                raise ValueError(f'benchmark config {source} does not exist')
            cfg = parser.parse_args(['--config', str(source)])
    except ArgumentError as error:
        raise ValueError(f'bad benchmark config: {error}') from error
    return _from_namespace(cfg)
