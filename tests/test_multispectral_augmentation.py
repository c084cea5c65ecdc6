# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""SyntheticAugmentation with multispectral generators on TorchGeo's EuroSAT, Potsdam, Vaihingen.

The datamodules are TorchGeo's own, on the fake files in ``tests/data`` (their layouts). The
generator writes band ``i`` as the constant ``10 * i``, so every dataset band of a synthetic
row says which generator band it came from, and at which scale.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning import Trainer
from test_synthetic_geo import RecordingGenerator
from test_torchgeo_datasets import DATA, ListBank, banded, first_batch
from torch import Tensor
from torchgeo.datamodules import (
    EuroSATDataModule,
    Potsdam2DDataModule,
    Vaihingen2DDataModule,
)
from torchgeo.datasets import EuroSAT

from torchgeo_earthsynth.compat import ClassificationTask, SemanticSegmentationTask
from torchgeo_earthsynth.encodings.bands import SENTINEL2_BANDS, SpectralBands, canonical_band
from torchgeo_earthsynth.encodings.registry import ENCODINGS, SelectBands
from torchgeo_earthsynth.families import build_pipeline
from torchgeo_earthsynth.models import tiny_controlnet, tiny_parts
from torchgeo_earthsynth.models.tiny import tiny_multispectral_vae
from torchgeo_earthsynth.synthesis import Synthesizer
from torchgeo_earthsynth.transforms import SyntheticAugmentation, attach
from torchgeo_earthsynth.transforms.synthetic_bands import BandMap, band_map
from torchgeo_earthsynth.transforms.synthetic_rows import GENERATED, REAL

#: Sentinel-2 top-of-atmosphere reflectance, each band with its own top (0.2 .. 0.8).
S2_BANDS = SpectralBands(
    SENTINEL2_BANDS,
    (0.0,) * 13,
    tuple(0.2 + 0.05 * i for i in range(13)),
    'reflectance',
)
#: An aerial RGB + near-infrared generator, its bands in another order than Potsdam's.
RGBIR_BANDS = SpectralBands(('IR', 'R', 'G', 'B'), (0,) * 4, (200, 255, 255, 255), 'dn8')


class PatternGenerator(RecordingGenerator):
    """A mask-conditioned generator declaring its bands: band ``i`` is ``10 * i``."""

    def __init__(self, bands: SpectralBands) -> None:
        super().__init__()
        self.accepts = {'prompt', 'mask'}
        self.bands = bands
        self.count = len(bands)

    def generate(
        self, masks: Tensor, prompts: list[str], seeds: list[int], *, metadata: Tensor | None
    ) -> Tensor:
        pattern = 10.0 * torch.arange(self.count, dtype=torch.float32)
        return pattern[:, None, None].expand(len(masks), -1, *masks.shape[-2:]).clone()


def expected_pixels(bands: SpectralBands, loaded: tuple[str, ...], factor: float) -> Tensor:
    """What each loaded band of a synthetic row holds: its generator band's pattern, scaled."""
    where = [[canonical_band(n) for n in bands.names].index(canonical_band(b)) for b in loaded]
    return torch.tensor([10 * i / 255 * bands.maximum[i] * factor for i in where])


def train_one_step(task: Any, dm: Any) -> None:
    trainer = Trainer(
        accelerator='cpu',
        fast_dev_run=1,  # one training step (and one validation batch)
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 1


# ---------------------------------------------------------------------- EuroSAT
def layouts_bank() -> ListBank:
    """Layouts of every EuroSAT class that has a vocabulary counterpart."""
    mapped = sorted({v for v in ENCODINGS['EuroSAT'].vocabulary if v})
    return ListBank([banded([0, v], seed=v) for v in mapped])


@pytest.mark.parametrize(
    'bands', [EuroSAT.all_band_names, ('B08', 'B04', 'B03', 'B02', 'B8A', 'B11')]
)
def test_eurosat_bands_come_from_their_sentinel2_bands(bands: tuple[str, ...]) -> None:
    dm = EuroSATDataModule(root=str(DATA / 'eurosat'), batch_size=10, bands=bands)
    synthetic = SyntheticAugmentation(
        task='classification',
        source='online',
        p=1.0,
        synthesizer=PatternGenerator(S2_BANDS),
        bank=layouts_bank(),
    )
    attach(dm, synthetic)  # no image_scale: reflectance x 10000 from the registry
    assert isinstance(synthetic.band_map, BandMap) and synthetic.band_map.loaded == bands
    batch = first_batch(dm)
    out, plan = synthetic.augment({k: v.clone() for k, v in batch.items()})
    generated = (plan.origin == GENERATED).nonzero().flatten()
    assert len(generated) == 6  # the 6 EuroSAT classes with a vocabulary counterpart
    assert out['image'].shape == (10, len(bands), 16, 16)
    want = expected_pixels(S2_BANDS, bands, 10000)
    for row in generated.tolist():
        torch.testing.assert_close(out['image'][row, :, 0, 0], want)
        assert (out['image'][row] == out['image'][row, :, :1, :1]).all()  # constant bands
    real = plan.origin == REAL
    assert torch.equal(out['image'][real], batch['image'][real])
    assert torch.equal(out['label'], batch['label'])  # classification labels stay
    # the datamodule normalises the bands as loaded, and a task trains on them
    task = ClassificationTask(model='resnet18', in_channels=len(bands), num_classes=10)
    train_one_step(task, dm)
    assert synthetic.stats['generated'] == 12  # the step above drew a batch of its own


def test_rgbir_generator_on_eurosat_names_the_missing_bands() -> None:
    dm = EuroSATDataModule(root=str(DATA / 'eurosat'), batch_size=10)
    synthetic = SyntheticAugmentation(
        task='classification',
        source='online',
        synthesizer=PatternGenerator(RGBIR_BANDS),
        bank=layouts_bank(),
    )
    missing = [b for b in EuroSAT.all_band_names if b not in ('B02', 'B03', 'B04', 'B08')]
    with pytest.raises(ValueError, match=r'EuroSAT loads bands .*lack') as info:
        attach(dm, synthetic)
    assert str(missing) in str(info.value)
    assert "['IR', 'R', 'G', 'B']" in str(info.value)  # the generator's bands
    assert "bands=('B02', 'B03', 'B04', 'B08')" in str(info.value)  # what it could load
    assert dm.train_aug is not synthetic
    # its covered bands load, but 8-bit numbers are no reflectance: image_scale says how
    covered = EuroSATDataModule(root=str(DATA / 'eurosat'), bands=('B04', 'B03', 'B02', 'B08'))
    with pytest.raises(ValueError, match=r"'dn8' units but EuroSAT pixels are 'reflectance'"):
        attach(covered, synthetic)
    synthetic.image_scale = 10000 / 255
    attach(covered, synthetic)
    assert synthetic.band_map is not None and synthetic.band_map.indices == (1, 2, 3, 0)
    # without a bands option, the map follows the channel order TorchGeo's EuroSAT loads
    sentinel2 = SyntheticAugmentation(
        task='classification',
        source='online',
        synthesizer=PatternGenerator(S2_BANDS),
        bank=layouts_bank(),
    )
    attach(dm, sentinel2)
    assert sentinel2.band_map is not None
    assert sentinel2.band_map.loaded == EuroSAT.all_band_names  # B8A last
    assert sentinel2.band_map.indices[-1] == SENTINEL2_BANDS.index('B08A')


# ---------------------------------------------------------------------- Potsdam, Vaihingen
@pytest.mark.parametrize(
    ('module', 'folder', 'loaded'),
    [
        (Potsdam2DDataModule, 'potsdam', ('R', 'G', 'B', 'IR')),
        (Vaihingen2DDataModule, 'vaihingen', ('IR', 'R', 'G')),
    ],
)
def test_isprs_bands_come_from_their_generator_bands(
    module: type, folder: str, loaded: tuple[str, ...]
) -> None:
    dm = module(root=str(DATA / folder), batch_size=1, patch_size=16, val_split_pct=0.5)
    synthetic = SyntheticAugmentation(
        source='online',
        p=1.0,
        synthesizer=PatternGenerator(RGBIR_BANDS),
    )
    attach(dm, synthetic)  # all default bands, no SelectBands
    assert synthetic.encoding is ENCODINGS[dm.dataset_class.__name__]
    batch = first_batch(dm)
    out, plan = synthetic.augment({k: v.clone() for k, v in batch.items()})
    assert (plan.origin == GENERATED).all()
    want = expected_pixels(RGBIR_BANDS, loaded, 1.0)  # dn8 -> dn8: factor 1
    assert out['image'].shape[1] == len(loaded)
    for row in range(len(out['image'])):
        torch.testing.assert_close(out['image'][row, :, 3, 5], want)
    # segmentation labels are the real masks the rows were generated from
    assert torch.equal(out['mask'], batch['mask'])
    enc = ENCODINGS[dm.dataset_class.__name__]
    assert torch.equal(plan.condition, enc.lut()[batch['mask']])
    task = SemanticSegmentationTask(
        model='fcn', in_channels=len(loaded), num_classes=6, num_filters=4
    )
    train_one_step(task, dm)


def test_reflectance_generator_on_potsdam_needs_image_scale() -> None:
    dm = Potsdam2DDataModule(root=str(DATA / 'potsdam'), batch_size=2, val_split_pct=0.5)
    generator = PatternGenerator(S2_BANDS)
    synthetic = SyntheticAugmentation(source='online', synthesizer=generator)
    with pytest.raises(
        ValueError, match=r"'reflectance' units but Potsdam2D pixels are 'dn8'.*pass image_scale="
    ):
        attach(dm, synthetic)
    synthetic = SyntheticAugmentation(
        source='online',
        p=1.0,
        synthesizer=generator,
        image_scale=255.0,  # reflectance 1 -> 255
    )
    attach(dm, synthetic)
    assert synthetic.band_map is not None
    assert synthetic.band_map.indices == (3, 2, 1, 7)  # B04, B03, B02, B08
    out, _ = synthetic.augment(first_batch(dm))
    torch.testing.assert_close(
        out['image'][0, :, 0, 0], expected_pixels(S2_BANDS, ('R', 'G', 'B', 'IR'), 255)
    )


def test_rgb_sources_keep_the_rgb_path() -> None:
    # a generator declaring plain RGB 0..255 is today's RGB generator: Potsdam needs RGB
    rgb = SpectralBands(('R', 'G', 'B'), (0, 0, 0), (255, 255, 255), 'dn8')
    dm = Potsdam2DDataModule(root=str(DATA / 'potsdam'), batch_size=2)
    synthetic = SyntheticAugmentation(
        source='online',
        synthesizer=PatternGenerator(rgb),
    )
    with pytest.raises(ValueError, match=r"RGB bands only: select bands \('R', 'G', 'B'\)"):
        attach(dm, synthetic)
    assert synthetic.band_map is None
    selected = Potsdam2DDataModule(
        root=str(DATA / 'potsdam'), batch_size=2, transforms=SelectBands((0, 1, 2))
    )
    attach(selected, synthetic)
    assert synthetic.band_map is None
    # and a multispectral generator on a bank-and-generator mix: bank rows are RGB
    mixed = SyntheticAugmentation(
        source='both',
        synthesizer=PatternGenerator(RGBIR_BANDS),
        bank=ListBank([banded([0])]),
    )
    with pytest.raises(ValueError, match='RGB bands only'):
        attach(Potsdam2DDataModule(root=str(DATA / 'potsdam'), batch_size=2), mixed)


def test_band_map_clamps_to_the_pixel_range_and_refuses_bad_images() -> None:
    enc = ENCODINGS['Vaihingen2D']
    wide = SpectralBands(('IR', 'R', 'G'), (0, 0, 0), (510, 255, 255), 'dn8')
    mapped = band_map(enc, wide, enc.bands)
    pixels = mapped(torch.full((3, 2, 2), 200.0))
    assert pixels[0].eq(255).all() and pixels[1:].eq(200).all()
    with pytest.raises(ValueError, match=r'generator returned images of shape \(4, 2, 2\)'):
        mapped(torch.zeros(4, 2, 2))
    with pytest.raises(ValueError, match='image_scale must be > 0'):
        band_map(enc, wide, enc.bands, image_scale=0.0)


def test_undeclared_bands_are_refused_not_inserted() -> None:
    # e.g. a SynthesizerLoader not built yet at attach: its bands are unknown, taken for RGB
    generator = PatternGenerator(RGBIR_BANDS)
    del generator.bands
    synthetic = SyntheticAugmentation(
        ('background', 'water'), source='online', p=1.0, synthesizer=generator
    )
    batch = {'image': torch.full((2, 3, 16, 16), 9.0), 'mask': torch.ones(2, 16, 16).long()}
    with pytest.raises(ValueError, match='the generator returned 4 bands, but was taken for RGB'):
        synthetic.augment(batch)


def test_a_real_multispectral_synthesizer_fills_vaihingen_in_its_band_order() -> None:
    """The whole path: a 4-band generator's ``Synthesizer.bands`` -> Vaihingen's IR-R-G."""
    bands = SpectralBands(('R', 'G', 'B', 'IR'), (0,) * 4, (255, 255, 255, 200), 'dn8')
    parts = tiny_parts(seed=0, image_size=16)
    parts.vae = tiny_multispectral_vae(bands, seed=1, sample_size=16)
    synth = Synthesizer(build_pipeline(parts, tiny_controlnet(parts.unet)), num_inference_steps=2)
    assert synth.bands == bands
    dm = Vaihingen2DDataModule(
        root=str(DATA / 'vaihingen'), batch_size=1, patch_size=16, val_split_pct=0.5
    )
    synthetic = SyntheticAugmentation(source='online', p=1.0, synthesizer=synth)
    attach(dm, synthetic)
    assert synthetic.band_map is not None and synthetic.band_map.indices == (3, 0, 1)
    batch = first_batch(dm)
    out, plan = synthetic.augment({k: v.clone() for k, v in batch.items()})
    assert (plan.origin == GENERATED).all() and out['image'].shape[1] == 3
    assert torch.isfinite(out['image']).all() and float(out['image'].min()) >= 0
    assert float(out['image'][:, 0].max()) <= 200  # IR: the generator's 255 is 200 here
    assert not torch.equal(out['image'], batch['image'])
    assert torch.equal(out['mask'], batch['mask'])
