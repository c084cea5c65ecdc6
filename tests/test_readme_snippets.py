# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The README's TorchGeo quick starts, run as written (on fake data in TorchGeo's layouts)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from torchgeo_earthsynth.bank import SyntheticBank
from torchgeo_earthsynth.compat import TORCHGEO_VERSION_TUPLE
from torchgeo_earthsynth.vocabulary import CLASS_IDS, prompt_from_mask

DATA = Path(__file__).parent / 'data'
SIZE = 32


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding ``data/<dataset>`` (the fakes) and a filled ``outputs/bank``."""
    for name in ('loveda', 'ucmerced', 'vhr10'):
        shutil.copytree(DATA / name, tmp_path / 'data' / name, ignore=_scripts)
    samples = []
    for k, name in enumerate(('water', 'building', 'agriculture land', 'forest land', 'plane')):
        mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
        mask[: SIZE // 2 + k] = CLASS_IDS[name]
        image = torch.randint(0, 256, (3, SIZE, SIZE), generator=torch.Generator().manual_seed(k))
        samples.append({'image': image.float(), 'mask': mask, 'prompt': prompt_from_mask(mask)})
    SyntheticBank(tmp_path / 'outputs' / 'bank').add(samples)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _scripts(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == 'data.py']


def test_loveda_segmentation_quick_start(workdir: Path) -> None:
    # --- README: LoveDA segmentation -------------------------------------------------
    from lightning.pytorch import Trainer
    from torchgeo.datamodules import LoveDADataModule
    from torchgeo.datasets import LoveDA

    from torchgeo_earthsynth.bank import SyntheticBank
    from torchgeo_earthsynth.compat import SemanticSegmentationTask
    from torchgeo_earthsynth.transforms import SyntheticAugmentation, attach

    dm = LoveDADataModule(root='data/loveda', batch_size=4)
    synthetic = SyntheticAugmentation(
        LoveDA.classes, dataset='LoveDA', source='bank', bank=SyntheticBank('outputs/bank')
    )
    attach(dm, synthetic)  # LoveDA's mask values, bands and pixel range come from the registry
    task = SemanticSegmentationTask(
        model='unet', backbone='resnet18', weights=None, num_classes=8, ignore_index=0
    )
    Trainer(max_epochs=1, logger=False, enable_checkpointing=False).fit(task, dm)
    # --- end ---------------------------------------------------------------------------
    assert synthetic.stats['from_bank'] > 0, synthetic.stats
    assert synthetic.stats['replaced'] == synthetic.stats['from_bank']


def test_ucmerced_classification_quick_start(workdir: Path) -> None:
    # --- README: UCMerced classification ------------------------------------------------
    from lightning.pytorch import Trainer
    from torchgeo.datamodules import UCMercedDataModule

    from torchgeo_earthsynth.bank import SyntheticBank
    from torchgeo_earthsynth.compat import ClassificationTask
    from torchgeo_earthsynth.transforms import SyntheticAugmentation, attach

    dm = UCMercedDataModule(root='data/ucmerced', batch_size=16)
    synthetic = SyntheticAugmentation(
        task='classification', source='bank', bank=SyntheticBank('outputs/bank')
    )
    attach(dm, synthetic)  # UCMerced's classes and their vocabulary come from the registry
    task = ClassificationTask(model='resnet18', weights=None, num_classes=21)
    Trainer(max_epochs=1, logger=False, enable_checkpointing=False).fit(task, dm)
    # --- end ---------------------------------------------------------------------------
    assert synthetic.stats['from_bank'] > 0  # buildings, forest, plane rows had bank images


def test_vhr10_detection_quick_start(
    workdir: Path, vhr10_checksums: Callable[[Path], None]
) -> None:
    if TORCHGEO_VERSION_TUPLE < (0, 10):
        pytest.importorskip('pycocotools')  # TorchGeo 0.8 reads the annotations with it
    vhr10_checksums(workdir / 'data' / 'vhr10')  # fake files: TorchGeo 0.10 checks SHA-256
    # --- README: VHR10 detection (online generation) -------------------------------------
    from torchgeo.datamodules import VHR10DataModule

    from torchgeo_earthsynth.transforms import SynthesizerLoader, SyntheticAugmentation, attach

    dm = VHR10DataModule(root='data/vhr10', batch_size=4, patch_size=32)
    synthetic = SyntheticAugmentation(
        task='detection',
        source='online',
        # pretrained='jaychempan/EarthSynth' for the released weights; tiny=True is untrained
        synthesizer=SynthesizerLoader(tiny=True, image_size=32, num_inference_steps=2),
    )
    attach(dm, synthetic)  # boxes become the ControlNet condition; boxes and labels stay
    # --- end ---------------------------------------------------------------------------
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    out, plan = synthetic.augment(batch)
    assert synthetic.encoding is not None and synthetic.encoding.name == 'VHR10'
    assert out['label'] is batch['label']
    assert len(plan.origin) == len(batch['label']) == 4  # one batch of the 6 training images
    assert plan.synthetic.any()  # p=0.5 over 4 rows with seed 0


def test_vhr10_detection_from_a_bank_quick_start(
    workdir: Path, vhr10_checksums: Callable[[Path], None]
) -> None:
    if TORCHGEO_VERSION_TUPLE < (0, 10):
        pytest.importorskip('pycocotools')
    vhr10_checksums(workdir / 'data' / 'vhr10')
    boxes = torch.tensor([[2.0, 2.0, 14.0, 14.0], [14.0, 2.0, 26.0, 14.0]])
    ids = torch.tensor([CLASS_IDS['plane'], CLASS_IDS['ship']])
    mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
    mask[2:14, 2:14], mask[2:14, 14:26] = ids[0], ids[1]
    image = torch.randint(0, 256, (3, SIZE, SIZE), generator=torch.Generator().manual_seed(0))
    sample = {'image': image.float(), 'mask': mask, 'bbox_xyxy': boxes, 'label': ids}
    SyntheticBank('outputs/detection_bank').add([sample])
    # --- README: VHR10 detection from a bank -------------------------------------------
    from lightning.pytorch import Trainer
    from torchgeo.datamodules import VHR10DataModule

    from torchgeo_earthsynth.compat import ObjectDetectionTask
    from torchgeo_earthsynth.transforms import SyntheticAugmentation, attach

    dm = VHR10DataModule(root='data/vhr10', batch_size=4, patch_size=32)
    synthetic = SyntheticAugmentation(
        task='detection', source='bank', bank=SyntheticBank('outputs/detection_bank')
    )
    attach(dm, synthetic)  # bank samples replace real ones with the boxes they were generated from
    task = ObjectDetectionTask(
        model='faster-rcnn', backbone='resnet18', weights=None, num_classes=11
    )
    Trainer(max_epochs=1, logger=False, enable_checkpointing=False).fit(task, dm)
    # --- end ---------------------------------------------------------------------------
    assert synthetic.stats['from_bank'] > 0
