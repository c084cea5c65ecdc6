# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Train the tiny EarthSynth model for a few steps with DDP on CPU; each rank saves its weights.

Usage: python tests/data/train_ddp.py <mini corpus root> <output folder>
"""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.lightning_modules import EarthSynthControlNet


class SaveWeights(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        assert isinstance(module, EarthSynthControlNet)
        weights = {f'p{i}': p.detach().clone() for i, p in enumerate(module.trained_parameters())}
        weights['first_prompt'] = torch.tensor(self.first_batch_sum)
        torch.save(weights, self.out / f'rank{trainer.global_rank}.pt')

    def on_train_batch_start(self, trainer, module, batch, batch_idx):  # noqa: ANN001
        if batch_idx == 0:
            self.first_batch_sum = float(batch['image'].sum())


def main() -> None:
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0)
    model = EarthSynthControlNet(image_size=32, val_num_samples=0, lr=1e-3)
    loader = DataLoader(EarthSynth180K(root), batch_size=2, shuffle=True)
    trainer = pl.Trainer(
        accelerator='cpu',
        devices=2,
        strategy='ddp',
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[SaveWeights(out)],
        default_root_dir=out,
    )
    trainer.fit(model, loader)


if __name__ == '__main__':
    main()
