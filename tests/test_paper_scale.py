# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The paper-scale configs run for real on CPU, on random-weight bases of the real architectures.

The slowest tests of the suite, opt-in (``pytest -m paper_scale``): ``earthsynth fit`` with
``configs/sd15.yaml`` at 256 px for two steps, the export in diffusers'
``StableDiffusionControlNetPipeline`` and in our ``Synthesizer``, R-Filter and the bank. The
fit peaked at 13.2 GiB in float32 and the test took under 11 minutes on a 2-core machine
shared with other jobs; a machine with less memory skips it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from torchgeo_earthsynth.models.random_base import random_base

pytestmark = pytest.mark.paper_scale

CONFIGS = Path(__file__).parents[1] / 'configs'
#: Every config that names a real base, with the architecture its base has.
PAPER_CONFIGS = {'sd15.yaml': 'sd15'}
#: Configs that name a real base but are not run here, and why.
NOT_RUN = {
    'diffusionsat_sd21.yaml': 'fine-tunes the whole SD 2.1 UNet: its weights, gradients, AdamW '
    'and EMA in float32 need ~17 GB, over the CI machine (24 GiB shared, 2 cores)',
}
SIZE = 256


def cpu_precision() -> str:
    """``bf16-mixed`` where the CPU computes bfloat16 natively, else ``32-true``.

    Without AVX512-BF16 or AMX every bfloat16 matmul is converted through float32: the two
    steps took over 19 minutes under ``bf16-mixed`` on the 2-core AVX2 machine.
    """
    cpuinfo = Path('/proc/cpuinfo')
    flags = cpuinfo.read_text() if cpuinfo.exists() else ''
    return 'bf16-mixed' if 'avx512_bf16' in flags or 'amx_bf16' in flags else '32-true'


def _real_base(config: Path) -> str | None:
    model = yaml.safe_load(config.read_text()).get('model') or {}
    init = model.get('init_args') or {}
    base = init.get('base_model')
    return base if init.get('preset') == 'pretrained' else None


def test_every_config_with_a_real_base_is_covered() -> None:
    named = {p.name for p in CONFIGS.glob('*.yaml') if _real_base(p)}
    assert named == set(PAPER_CONFIGS) | set(NOT_RUN)


@pytest.fixture(scope='module')
def sd15_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SD 1.5's architecture with random weights (float16 on disk, 2.1 GB)."""
    return random_base('sd15', tmp_path_factory.mktemp('sd15') / 'base')


def _fit(config: str, base: Path, root: Path, cwd: Path) -> tuple[Path, float]:
    """Run ``earthsynth fit`` in a child process; its export and peak RSS (GiB)."""
    args = [
        sys.executable,
        '-m',
        'torchgeo_earthsynth.cli',
        'fit',
        '--config',
        str(CONFIGS / config),
        '--model.init_args.base_model',
        str(base),
        '--model.init_args.val_num_samples',
        '0',
        '--data.init_args.root',
        str(root),
        '--data.init_args.batch_size',
        '1',
        '--data.init_args.num_workers',
        '0',
        '--data.init_args.size',
        str(SIZE),
        '--trainer.accelerator',
        'cpu',
        '--trainer.devices',
        '1',
        '--trainer.precision',
        cpu_precision(),
        '--trainer.strategy',
        'auto',
        '--trainer.max_steps',
        '2',
        '--trainer.accumulate_grad_batches',
        '1',
        '--trainer.limit_val_batches',
        '0',
        '--trainer.enable_progress_bar',
        'false',
    ]
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    run = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-4000:]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    exports = sorted(cwd.glob('outputs/*/lightning_logs/version_*/export'))
    assert exports, run.stderr[-2000:]
    return exports[-1], peak


@pytest.mark.skipif(
    os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') < 20 * 2**30,
    reason='the SD 1.5 fit needs ~14 GiB: runs on machines with 20 GiB of memory or more',
)
def test_sd15_fit_export_pipeline_synthesizer_rfilter_bank(sd15_base: Path, tmp_path: Path) -> None:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from torchgeo_earthsynth.bank import SyntheticBank
    from torchgeo_earthsynth.datasets import make_mini_corpus
    from torchgeo_earthsynth.rfilter import RFilter
    from torchgeo_earthsynth.synthesis import Synthesizer

    root = make_mini_corpus(tmp_path / 'corpus', seed=0, size=SIZE, num_train=2, num_val=1)
    export, peak = _fit('sd15.yaml', sd15_base, root, tmp_path)
    print(f'earthsynth fit configs/sd15.yaml, {SIZE} px: peak RSS {peak:.1f} GiB')
    controlnet = ControlNetModel.from_pretrained(export, subfolder='controlnet')
    assert tuple(controlnet.config.conditioning_embedding_out_channels) == (16, 32, 96, 256)

    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        sd15_base,
        controlnet=controlnet,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        torch_dtype=torch.float32,
    )
    condition = torch.full((2, 3, SIZE, SIZE), 4 / 255)
    prompts = ['A satellite image of road', 'A satellite image of water']
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    out = pipe(
        prompts,
        image=condition,
        num_inference_steps=2,
        generator=generators,
        output_type='pt',
    ).images
    assert out.shape == (2, 3, SIZE, SIZE) and bool(torch.isfinite(out).all())
    del pipe

    synth = Synthesizer.from_pretrained(export, base=sd15_base, num_inference_steps=2)
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    masks[0, : SIZE // 2] = 4  # road
    masks[1, :, : SIZE // 3] = 6  # water
    samples = synth.synthesize(masks, prompts, seeds=[0, 1])
    assert len(samples) == 2
    image = samples[0]['image']
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert bool(torch.isfinite(image).all()) and 0 <= image.min() <= image.max() <= 255

    rfilter = RFilter(clip_model=None, alignment=False, layout=False)
    batch = {'image': torch.stack([s['image'] for s in samples]), 'mask': masks}
    kept, result = rfilter.filter(batch)
    assert len(result.keep) == 2 and rfilter.counts['total']['seen'] == 2
    bank = SyntheticBank(tmp_path / 'bank', durable=False)
    chosen = [s for s, keep in zip(samples, result.keep.tolist()) if keep]
    assert bank.add(chosen) == len(chosen) == len(kept['image'])
    assert len(bank.refresh()) == len(chosen)
