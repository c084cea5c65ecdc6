# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Season following: the metric on known inputs, and a briefly trained text + metadata model."""

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from torchgeo_earthsynth.datamodules import EarthSynthMiniDataModule
from torchgeo_earthsynth.datasets import EarthSynthMini
from torchgeo_earthsynth.datasets.mini import greenness
from torchgeo_earthsynth.lightning_modules import DiffusionSatTask
from torchgeo_earthsynth.metrics import corpus_season_shift, season_shift

# Every scene in the north: there the month alone sets the season (over both hemispheres the
# month's average effect is nil, and a tiny model does not learn latitude x month quickly).
CORPUS = {'seed': 0, 'size': 32, 'num_train': 128, 'num_val': 8, 'latitudes': (0.0, 60.0)}
# A 2x tiny VAE warmed up briefly averages the seasons' colours away (its reconstructions kept
# 4 % of the corpus's shift); at 1x, 200 steps keep ~20 %, enough to follow (benchmarks/
# metadata_following.py prints both).
SIZE, VAE_DOWNSCALE, VAE_STEPS, STEPS, SEEDS = 16, 1, 200, 300, 2


class SeasonalPainter:
    """Paints each request green in its hemisphere's summer, brown in its winter."""

    def generate(self, masks: None, prompts: list[str], **kwargs: Any) -> Tensor:
        metadata = kwargs['metadata']
        green = torch.tensor([greenness(float(m[5]), float(m[1])) for m in metadata])
        summer, winter = torch.tensor([60.0, 160.0, 60.0]), torch.tensor([150.0, 135.0, 90.0])
        colour = green[:, None] * summer + (1 - green[:, None]) * winter
        return colour[:, :, None, None].expand(-1, -1, 4, 4).clone()


def test_season_shift_pairs_summer_and_winter() -> None:
    # a northern and a southern request: each generated at its own midsummer and midwinter
    metadata = torch.tensor([[0.0, 45.0, 0.5, 0.0, 2020, 3, 1], [0.0, -30.0, 0.5, 0.0, 2020, 9, 1]])
    shift = season_shift(SeasonalPainter(), ['a', 'b'], metadata, seeds=[0, 1])  # type: ignore[arg-type]
    expected = 160 / 280 - 135 / 375
    assert torch.allclose(shift, torch.full((2,), expected))


def test_corpus_season_shift(tmp_path: Path) -> None:
    small = {**CORPUS, 'num_train': 32, 'num_val': 1}
    north = corpus_season_shift(EarthSynthMini(tmp_path, **small))
    assert north > 0.02  # summer vegetation is greener in the real (rendered) images
    with pytest.raises(ValueError, match='0 summer and 0 winter scenes'):
        corpus_season_shift(EarthSynthMini(tmp_path, **small), extreme=0.0)


def shifts(task: DiffusionSatTask, prompts: list[str], metadata: Tensor) -> Tensor:
    task.eval()
    synth = task.synthesizer(num_inference_steps=10, guidance_scale=2.0)
    count = len(prompts)
    return torch.cat(
        [
            season_shift(synth, prompts, metadata, range(k * count, (k + 1) * count))
            for k in range(SEEDS)
        ]
    )


def test_trained_model_follows_the_month(tmp_path: Path) -> None:
    val = EarthSynthMini(tmp_path, split='val', **CORPUS)
    prompts = [val[i]['prompt'] for i in range(len(val))]
    metadata = torch.stack([val[i]['metadata'] for i in range(len(val))])
    real = corpus_season_shift(EarthSynthMini(tmp_path, **CORPUS))
    pl.seed_everything(0)
    task = DiffusionSatTask(
        image_size=SIZE,
        lr=1e-3,
        lr_warmup_steps=20,
        vae_warmup_steps=VAE_STEPS,
        tiny_vae_downscale=VAE_DOWNSCALE,
        ema_decay=None,
        val_num_samples=0,
    )
    untrained = shifts(task, prompts, metadata)
    datamodule = EarthSynthMiniDataModule(
        batch_size=16,
        size=SIZE,
        normalize=False,
        root=tmp_path,
        tile_size=32,
        **{k: v for k, v in CORPUS.items() if k != 'size'},
    )
    trainer = pl.Trainer(
        accelerator='cpu',
        max_steps=VAE_STEPS + STEPS,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task.train(), datamodule)
    trained = shifts(task, prompts, metadata)
    figures = (
        f'summer - winter green chroma: corpus {real:+.4f}, untrained '
        f'{float(untrained.mean()):+.4f}, trained {float(trained.mean()):+.4f} '
        f'(standard error {float(trained.std() / len(trained) ** 0.5):.4f})'
    )
    print(figures)
    assert real > 0.04, figures
    # fresh metadata embeddings have no effect; trained ones turn summer green, as the corpus
    assert torch.equal(untrained, torch.zeros_like(untrained)), figures
    error = float(trained.std() / len(trained) ** 0.5)
    assert float(trained.mean()) > 3 * error > 0, figures
