# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The demo's settings: one dataclass, read by every stage and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torchgeo_earthsynth.bank.layouts import LayoutDraw


@dataclass
class DemoConfig:
    """Settings of the demo; the defaults fit 2 CPU cores and about 10 minutes."""

    output: Path = Path('outputs/demo')
    root: Path | None = None  # an EarthSynth-180K root instead of the mini corpus
    device: str = 'cpu'
    image_size: int = 32
    num_train: int = 256
    num_val: int = 64
    # rare classes (buildings, water, vehicles, tanks) in few scenes, as in EarthSynth-180K
    long_tail: bool = True
    # None: the generator shipped in the package (configs/mini_generator.yaml's recipe);
    # train_generator trains one from scratch in the demo instead
    generator: Path | None = None
    train_generator: bool = False
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
    num_synthetic: int = 64  # held-out masks the generator is scored on
    num_bank: int = 128  # layouts generated for the bank
    bank_draw: LayoutDraw = 'cf-comp'
    rfilter: bool = True
    # R-Filter drops a sample scoring under half of what 90 % of real scenes reach
    layout_quantile: float = 0.1
    layout_fraction: float = 0.5
    # data-efficiency study: real labelled scenes per run (None: all training scenes)
    downstream_budgets: tuple[int | None, ...] = (4, 16, None)
    downstream_train: int | None = None  # one budget instead of downstream_budgets
    downstream_steps: int = 250
    downstream_batch_size: int = 16
    # a small budget repeats within an epoch of this many samples: one batch size for all
    epoch_samples: int = 128
    # TorchGeo's FCN (5 convolutions at full resolution) runs 100 steps in ~4 s on 2 cores,
    # U-Net/ResNet-18 in ~17 s
    downstream_model: dict[str, Any] = field(
        default_factory=lambda: {'model': 'fcn', 'num_filters': 32, 'lr': 3e-3}
    )
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)


__all__ = ('DemoConfig',)
