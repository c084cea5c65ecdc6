# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The place-and-date tutorial (DiffusionSat), run as written on tiny models in their layouts.

Its python blocks run in order in one namespace, in a folder holding tiny checkpoints under
the names the page loads (DiffusionSat's ``checkpoint-N/unet`` and ``checkpoint-N/
controlnet`` layouts, our ``MetadataControlNet`` export). A line ``name = ...`` is a
placeholder the test fills (a TorchGeo GeoDataset and batch, bands, masks, a datamodule);
the one size change is the super-resolution condition (256 px -> 16 px: the tiny VAE). Its
``earthsynth fit`` commands are checked by LightingCLI (``--print_config``).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from test_docs_snippets import run_with
from test_synthetic_geo import TILES, DatedImages, Masks, write
from torchgeo.datamodules import GeoDataModule
from torchgeo.datasets import stack_samples
from torchgeo.samplers import GridGeoSampler

from torchgeo_earthsynth.cli import main as cli_main
from torchgeo_earthsynth.lightning_modules import MetadataControlNet
from torchgeo_earthsynth.models import tiny_diffusionsat_controlnet, tiny_diffusionsat_parts
from torchgeo_earthsynth.synthesis import Synthesizer, build_text_pipeline

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'tutorials' / 'place_and_date.md'
SIZE = 32
#: The one edit to the page's code: the tiny super-resolution ControlNet's condition size.
EDITS = {'size=(256, 256)': f'size=({SIZE // 2}, {SIZE // 2})'}


def section_blocks(language: str) -> list[str]:
    """The page's fenced code blocks in ``language``, in order."""
    return re.findall(rf'```{language}\n(.*?)```', PAGE.read_text(), flags=re.DOTALL)


class ImagesAndMasks(GeoDataModule):  # type: ignore[misc]  # torchgeo is untyped
    """A TorchGeo GeoDataModule of dated images and masks (TorchGeo's own classes)."""

    def __init__(self, paths: Path) -> None:
        super().__init__(DatedImages, batch_size=2, patch_size=16, paths=paths)

    def setup(self, stage: str) -> None:
        self.train_dataset = DatedImages(self.kwargs['paths']) & Masks(self.kwargs['paths'])


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The checkpoints under the page's names, and two dated GeoTIFF tiles."""
    parts = tiny_diffusionsat_parts(0, SIZE)
    release = tmp_path / 'finetune_sd21_sn-satlas-fmow_snr5_md7norm_bs64'
    build_text_pipeline(parts).save_pretrained(release)  # their release: UNet in checkpoint-N/
    shutil.move(release / 'unet', release / 'checkpoint-100' / 'unet')
    sr = tmp_path / 'controlnet_sd21_md7norm_fmow_condres256' / 'checkpoint-100' / 'controlnet'
    tiny_diffusionsat_controlnet(parts.unet).save_pretrained(sr)
    export = tmp_path / 'outputs/earthsynth_metadata_tiny/lightning_logs/version_0/export'
    MetadataControlNet(image_size=SIZE).save_pretrained(export)
    (tmp_path / 'geo').mkdir()
    for date, (left, top) in TILES.items():
        write(tmp_path / 'geo' / f'image_{date}.tif', left, top, 3, 100)
        write(tmp_path / 'geo' / f'mask_{date}.tif', left, top, 1, 1)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def placeholders(workdir: Path) -> dict[str, Any]:
    """What the page's ``name = ...`` lines stand for."""
    datamodule = ImagesAndMasks(workdir / 'geo')
    datamodule.setup('fit')
    dataset = datamodule.train_dataset
    queries = list(GridGeoSampler(dataset, size=16, stride=16))
    batch = stack_samples([dataset[query] for query in queries])
    masks = torch.zeros(len(queries), SIZE, SIZE, dtype=torch.long)
    masks[:, : SIZE // 2] = 6  # water
    return {
        'dataset': dataset,
        'batch': batch,
        'bands13': torch.rand(len(queries), 13, 8, 8) * 3000,
        'masks': masks,
        'geo_datamodule': datamodule,
        'classes': ('background', 'water', 'tree'),
    }


def test_python_blocks_run(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load = Synthesizer.from_pretrained

    def load_fast(*args: Any, **kwargs: Any) -> Synthesizer:  # tiny models: 2 sampler steps
        return load(*args, **{'num_inference_steps': 2, **kwargs})

    monkeypatch.setattr(Synthesizer, 'from_pretrained', load_fast)
    blocks = section_blocks('python')
    assert len(blocks) == 5
    given = placeholders(workdir)
    namespace: dict[str, Any] = {}
    for block in blocks:
        for old, new in EDITS.items():
            block = block.replace(old, new)
        run_with(PAGE, block, namespace, given)
    # the last text + metadata model (super-resolution) and the mask ControlNet generated
    images = namespace['images']
    assert images.shape == (2, 3, SIZE, SIZE) and torch.isfinite(images).all()
    assert namespace['metadata'].shape == (2, 7)
    assert sorted(namespace['metadata'][:, 4:].tolist()) == [[2019, 3, 1], [2021, 7, 14]]
    synthetic = namespace['synthetic']
    assert given['geo_datamodule'].train_aug is synthetic
    batch = given['batch']
    masks = batch['mask'].reshape(len(batch['image']), *batch['image'].shape[-2:]).long()
    batch = {**batch, 'image': batch['image'].float(), 'mask': masks}
    out = synthetic(batch)
    assert out['image'].shape == batch['image'].shape


def test_fit_commands_parse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    (block,) = section_blocks('bash')
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line]
    assert len(commands) == 3
    for command in commands:
        assert command[:3] == ['uv', 'run', 'earthsynth']
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*command[3:], '--print_config'])
        assert exit_info.value.code == 0
        config = Path(command[command.index('--config') + 1]).stem
        assert f'default_root_dir: outputs/{config}' in capsys.readouterr().out
