# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchgeo_earthsynth.metrics import (
    TINY_CLIP_CONFIG,
    ClipScorer,
    FrechetDistance,
    MaskFidelity,
    PixelClassifier,
    fid,
    find_inception_weights,
    mask_fidelity,
    per_sample_miou,
    psnr,
    rgb_to_y,
    ssim,
    tiny_open_clip,
)
from torchgeo_earthsynth.vocabulary import CLASS_IDS, NUM_CLASSES, VOCABULARY

PROMPTS = ['A satellite image of road', 'A satellite image of water', 'A satellite image of tree']


def _images(n: int, size: int = 32, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.fixture(scope='module')
def tiny_scorer() -> ClipScorer:
    with pytest.warns(UserWarning, match='random weights'):
        return ClipScorer.tiny(seed=0, batch_size=2)


# ------------------------------------------------------------------------------ CLIP score


class TestClipScorer:
    def test_score_features_formula(self) -> None:
        a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        b = torch.tensor([[2.0, 0.0, 0.0], [5.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 3**0.5, 0]])
        scores = ClipScorer.score_features(a, b)
        # identical direction, orthogonal, opposite (clamped), 60 degrees
        torch.testing.assert_close(scores, torch.tensor([100.0, 0.0, 0.0, 50.0]))

    def test_tiny_open_clip(self) -> None:
        state = torch.random.get_rng_state()
        model, tokenizer, size = tiny_open_clip(seed=3)
        assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
        assert size == 32 and not model.training
        assert sum(p.numel() for p in model.parameters()) < 2_000_000
        tokens = tokenizer(PROMPTS)
        assert tokens.shape == (3, 77) and tokens.dtype == torch.long
        assert model.encode_image(torch.zeros(2, 3, 32, 32)).shape == (2, 32)
        same = tiny_open_clip(seed=3).model.state_dict()
        other = tiny_open_clip(seed=4).model.state_dict()
        key = 'visual.conv1.weight'
        assert torch.equal(model.state_dict()[key], same[key])
        assert not torch.equal(model.state_dict()[key], other[key])

    def test_score_matches_manual(self, tiny_scorer: ClipScorer) -> None:
        images = _images(3)
        scores = tiny_scorer.score(images, PROMPTS)
        assert scores.shape == (3,) and scores.dtype == torch.float32
        model, tokenizer, _ = tiny_open_clip(seed=0)
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        with torch.no_grad():
            img = F.normalize(model.encode_image((images / 255 - mean) / std), dim=-1)
            txt = F.normalize(model.encode_text(tokenizer(PROMPTS)), dim=-1)
        expected = (100 * (img * txt).sum(-1)).clamp(min=0)
        torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
        assert ((scores >= 0) & (scores <= 100)).all()

    def test_batched_equals_per_image(self, tiny_scorer: ClipScorer) -> None:
        images = _images(5, seed=1)
        prompts = [PROMPTS[i % 3] for i in range(5)]
        batched = tiny_scorer.score(images, prompts)  # batch_size=2: three chunks
        single = torch.cat([tiny_scorer.score(images[i : i + 1], [prompts[i]]) for i in range(5)])
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
        one_prompt = tiny_scorer.score(images, PROMPTS[0])
        torch.testing.assert_close(one_prompt[0], batched[0])

    def test_resize_and_normalise(self, tiny_scorer: ClipScorer) -> None:
        images = torch.full((2, 3, 48, 64), 128.0)
        x = tiny_scorer.preprocess(images)
        assert x.shape == (2, 3, 32, 32)
        mean = torch.tensor(tiny_scorer.mean).view(1, 3, 1, 1)
        std = torch.tensor(tiny_scorer.std).view(1, 3, 1, 1)
        torch.testing.assert_close(x, ((128 / 255 - mean) / std).expand_as(x))
        # shortest-side resize + centre crop keeps the middle: the left/right edges are cut
        images[..., :2] = 0
        images[..., -2:] = 255
        torch.testing.assert_close(tiny_scorer.preprocess(images), x)

    def test_warns_only_for_random_models(self) -> None:
        model, tokenizer, _ = tiny_open_clip()
        with pytest.warns(UserWarning, match='random weights'):
            scorer = ClipScorer(model, tokenizer)  # inferred from the initial logit_scale
        assert not scorer.pretrained
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert ClipScorer(model, tokenizer, pretrained=True).pretrained
            with torch.no_grad():
                model.logit_scale.fill_(math.log(100))  # what a trained CLIP ends with
            assert ClipScorer(model, tokenizer).pretrained

    def test_any_model_with_encoders(self) -> None:
        class Stub(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.weight = nn.Parameter(torch.ones(()))

            def encode_image(self, image: Tensor) -> Tensor:
                return image.mean((2, 3))  # [B, 3]

            def encode_text(self, text: Tensor) -> Tensor:
                return F.one_hot(text[:, 0] % 3, 3).float()  # [B, 3]

        def tokenizer(prompts: list[str]) -> Tensor:
            return torch.tensor([[len(p)] for p in prompts])

        with pytest.raises(ValueError, match='image_size is required'):
            ClipScorer(Stub(), tokenizer)
        scorer = ClipScorer(Stub(), tokenizer, image_size=8, mean=(0, 0, 0), std=(1, 1, 1))
        assert scorer.pretrained  # no logit_scale: nothing says it is random
        images = torch.zeros(2, 3, 16, 16)
        images[0, 0] = 255  # red: feature (1, 0, 0)
        images[1, 1] = 255  # green: feature (0, 1, 0)
        # len('abc') % 3 == 0 -> (1, 0, 0); len('abcd') % 3 == 1 -> (0, 1, 0)
        torch.testing.assert_close(scorer.score(images, ['abc', 'abc']), torch.tensor([100.0, 0]))
        torch.testing.assert_close(scorer.score(images, ['abc', 'abcd']), torch.tensor([100.0] * 2))

    def test_bad_inputs(self, tiny_scorer: ClipScorer) -> None:
        with pytest.raises(ValueError, match='got 2 images but 3 prompts'):
            tiny_scorer.score(_images(2), PROMPTS)
        with pytest.raises(ValueError, match=r'images must be \[B, 3, H, W\]'):
            tiny_scorer.score(torch.zeros(2, 1, 32, 32), PROMPTS[:2])

    def test_local_checkpoint(self, tmp_path: Path) -> None:
        model, tokenizer, _ = tiny_open_clip(seed=5)
        path = tmp_path / 'tiny_clip.pt'
        torch.save(model.state_dict(), path)
        with warnings.catch_warnings():
            warnings.simplefilter('error')  # loaded weights: no random-model warning
            scorer = ClipScorer.from_pretrained('ViT-B-32', str(path), **TINY_CLIP_CONFIG)
        for key, value in model.state_dict().items():
            assert torch.equal(scorer.model.state_dict()[key], value), key
        reference = ClipScorer(model, tokenizer, pretrained=True)
        images = _images(2, seed=2)
        torch.testing.assert_close(
            scorer.score(images, PROMPTS[:2]), reference.score(images, PROMPTS[:2])
        )

    def test_random_from_name_warns(self) -> None:
        with pytest.warns(UserWarning, match='random weights'):
            scorer = ClipScorer.from_pretrained('ViT-B-32', None, **TINY_CLIP_CONFIG)
        assert scorer.image_size == (32, 32)

    def test_tag_from_local_cache(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        # a fake Hugging Face cache holding the 'openai' tag's file (tiny weights inside)
        monkeypatch.setenv('HF_HUB_OFFLINE', '1')
        repo = tmp_path / 'models--timm--vit_base_patch32_clip_224.openai'
        (repo / 'refs').mkdir(parents=True)
        (repo / 'refs' / 'main').write_text('abc123')
        (repo / 'snapshots' / 'abc123').mkdir(parents=True)
        model, _, _ = tiny_open_clip(seed=6)
        torch.save(model.state_dict(), repo / 'snapshots/abc123/open_clip_pytorch_model.bin')
        start = time.monotonic()
        scorer = ClipScorer.from_pretrained(
            'ViT-B-32', 'openai', cache_dir=tmp_path, **TINY_CLIP_CONFIG
        )
        assert time.monotonic() - start < 30
        assert scorer.pretrained
        key = 'text_projection'
        assert torch.equal(scorer.model.state_dict()[key], model.state_dict()[key])
        # the tag's settings are applied: OpenAI CLIP uses QuickGELU
        assert type(scorer.model.transformer.resblocks[0].mlp.gelu).__name__ == 'QuickGELU'

    def test_offline_tag_fails_fast(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv('HF_HUB_OFFLINE', '1')
        start = time.monotonic()
        with pytest.raises(RuntimeError, match='not in the local cache'):
            ClipScorer.from_pretrained('ViT-B-32', 'openai', cache_dir=tmp_path)
        assert time.monotonic() - start < 10
        with pytest.raises(ValueError, match='known tags'):
            ClipScorer.from_pretrained('ViT-B-32', 'no-such-tag', cache_dir=tmp_path)
        with pytest.raises(FileNotFoundError, match='does not exist'):
            ClipScorer.from_pretrained('ViT-B-32', str(tmp_path / 'missing.safetensors'))


# ------------------------------------------------------------------------------ FID


class MeanStd(nn.Module):
    """Stand-in features: per-channel mean and std of 0..255 images."""

    num_features = 6

    def forward(self, images: Tensor) -> Tensor:
        x = images.float().flatten(2)
        return torch.cat([x.mean(-1), x.std(-1)], dim=1)


class TestFID:
    def test_no_weights_fails_before_download(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
        start = time.monotonic()
        with pytest.raises(FileNotFoundError, match='no download is attempted'):
            FrechetDistance()
        assert time.monotonic() - start < 5
        with pytest.raises(FileNotFoundError, match=r'missing\.pth'):
            FrechetDistance(weights_path=tmp_path / 'missing.pth')
        # the torch hub cache is where torch-fidelity puts its download
        cached = tmp_path / 'checkpoints' / 'weights-inception-2015-12-05-6726825d.pth'
        cached.parent.mkdir()
        cached.touch()
        assert find_inception_weights() == cached

    def test_custom_features(self) -> None:
        real = _images(32, size=16, seed=0) * 0.8  # room to shift without clipping
        metric = FrechetDistance(feature=MeanStd())
        metric.update(real, real=True)
        metric.update(real, real=False)
        assert abs(metric.compute()) < 1e-3
        values = []
        for shift in (5.0, 20.0):
            metric.reset()  # keeps the real set
            metric.update(real + shift, real=False)
            values.append(metric.compute())
            # a shift moves the three channel means by `shift` and leaves the covariance
            assert values[-1] == pytest.approx(3 * shift**2, rel=1e-3)
        assert 0 < values[0] < values[1]

    def test_fid_function(self) -> None:
        real, fake = _images(16, 16, seed=0), _images(16, 16, seed=1) * 0.5
        from_tensors = fid(real, fake, feature=MeanStd(), batch_size=5)
        from_batches = fid(real.split(8), list(fake.split(3)), feature=MeanStd())
        assert from_tensors > 100
        assert from_tensors == pytest.approx(from_batches, rel=1e-6)


# ------------------------------------------------------------------------------ mask fidelity


def _oracle(images: Tensor) -> Tensor:
    """A segmenter reading the class id off the red channel (id * 3)."""
    return F.one_hot((images[:, 0] / 3).round().long(), NUM_CLASSES).permute(0, 3, 1, 2).float()


class TestMaskFidelity:
    def test_perfect_segmenter(self) -> None:
        masks = torch.randint(0, 4, (3, 8, 8)) * 2  # ids 0, 2, 4, 6
        masks[0, 0, 0] = 6
        images = (masks * 3.0)[:, None].expand(-1, 3, -1, -1)
        result = mask_fidelity(_oracle, images, masks, batch_size=2)
        assert result.miou == pytest.approx(1.0)
        assert result.pixel_accuracy == pytest.approx(1.0)
        present = [VOCABULARY[i] for i in masks.unique().tolist()]
        assert list(result.per_class) == present
        assert result.num_pixels == 3 * 64 and result.ignored_pixels == 0

    def test_hand_computed_iou(self) -> None:
        masks = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2]]])
        pred = torch.tensor([[[1, 1, 1, 2], [1, 5, 2, 2]]])  # 5 is absent from the mask
        images = (pred * 3.0)[:, None].expand(-1, 3, -1, -1)
        result = mask_fidelity(_oracle, images, masks)
        # class 1: 3 hits / union 5; class 2: 3 hits / union 4; class 5 not averaged
        assert result.per_class == pytest.approx({'bare land': 0.6, 'grass': 0.75})
        assert result.miou == pytest.approx(0.675)
        assert result.pixel_accuracy == pytest.approx(6 / 8)

    def test_one_miou_definition_with_rfilter(self) -> None:
        # R-Filter's layout rule (per sample) and mask fidelity (over a data set) average over
        # the same classes: those of the target, not those only predicted (5 here).
        masks = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2]], [[3, 3, 3, 3], [0, 0, 0, 0]]])
        pred = torch.tensor([[[1, 1, 1, 2], [1, 5, 2, 2]], [[3, 3, 5, 5], [0, 0, 0, 5]]])
        images = (pred * 3.0)[:, None].expand(-1, 3, -1, -1)
        ours = per_sample_miou(pred, masks, NUM_CLASSES, ignore_index=0)
        assert ours.tolist() == pytest.approx([0.675, 0.5])
        for i in range(len(masks)):
            single = mask_fidelity(_oracle, images[i : i + 1], masks[i : i + 1], ignore_index=0)
            assert single.miou == pytest.approx(float(ours[i]))

    def test_label_map_resize_and_ignore(self) -> None:
        water, building, road = CLASS_IDS['water'], CLASS_IDS['building'], CLASS_IDS['road']
        masks = torch.zeros(1, 8, 8, dtype=torch.long)
        masks[0, :4] = water
        masks[0, 4:, :4] = building
        masks[0, 4:, 4:] = road  # the segmenter has no road class

        def segmenter(images: Tensor) -> Tensor:  # 3 classes at half resolution
            logits = torch.zeros(len(images), 3, 4, 4)
            logits[:, 1, :2] = 1  # water on top
            logits[:, 2, 2:] = 1  # building below
            return logits

        metric = MaskFidelity(segmenter, label_map=[0, water, building])
        metric.update(torch.zeros(1, 3, 8, 8), masks)
        result = metric.compute()
        assert result.per_class == pytest.approx({'water': 1.0, 'building': 1.0})
        assert result.ignored_pixels == 16 and result.num_pixels == 48
        metric.reset()
        with pytest.raises(RuntimeError, match='before any scored pixel'):
            metric.compute()

        masks[0, 4:, 4:] = 0
        images = torch.zeros(1, 3, 8, 8)
        result = mask_fidelity(segmenter, images, masks, [0, water, building], ignore_index=0)
        assert set(result.per_class) == {'water', 'building'}
        assert result.ignored_pixels == 16

    def test_bad_inputs(self) -> None:
        metric = MaskFidelity(_oracle)
        with pytest.raises(ValueError, match=r'mask ids must lie in \[0, 66\]'):
            metric.update(torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), 67))
        with pytest.raises(ValueError, match=r'masks \[B, H, W\]'):
            metric.update(torch.zeros(2, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
        with pytest.raises(ValueError, match='label_map values'):
            MaskFidelity(_oracle, label_map=[0, 70])
        with pytest.raises(ValueError, match='logits'):
            MaskFidelity(lambda x: x[:, 0]).update(
                torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
            )


# ------------------------------------------------------------------------------ PSNR / SSIM


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM of two [H, W] images: an 11x11 Gaussian window (sigma 1.5) at every pixel.

    Borders are reflect-padded by 5 px (numpy's ``reflect``, the edge not repeated).
    """
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / g.sum() ** 2
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    height, width = x.shape
    x, y = np.pad(x, 5, mode='reflect'), np.pad(y, 5, mode='reflect')
    values = []
    for i in range(height):
        for j in range(width):
            a, b = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mu_a, mu_b = (window * a).sum(), (window * b).sum()
            var_a = (window * a * a).sum() - mu_a**2
            var_b = (window * b * b).sum() - mu_b**2
            cov = (window * a * b).sum() - mu_a * mu_b
            values.append(
                (2 * mu_a * mu_b + c1)
                * (2 * cov + c2)
                / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


class TestPsnrSsim:
    def test_identical(self) -> None:
        x = _images(2, 16)
        assert psnr(x, x).item() == math.inf
        assert ssim(x, x).item() == pytest.approx(1.0)
        assert ssim(x / 255, x / 255, data_range=1.0).item() == pytest.approx(1.0)

    @pytest.mark.parametrize('c', [1.0, 5.0, 20.0])
    def test_constant_shift(self, c: float) -> None:
        target = _images(2, 16) * 0.9
        values = psnr(target + c, target, reduction='none')
        assert values.shape == (2,)
        expected = 20 * math.log10(255 / c)
        torch.testing.assert_close(values, torch.full((2,), expected, dtype=torch.float64))
        assert psnr((target + c) / 255, target / 255, data_range=1.0).item() == pytest.approx(
            expected
        )

    def test_crop_border(self) -> None:
        target = _images(2, 24)
        preds = target.clone()
        preds[..., :2, :] += 30  # differences only in a 2-px border
        preds[..., :, -2:] -= 30
        assert psnr(preds, target).item() < 40
        assert ssim(preds, target).item() < 1
        assert psnr(preds, target, crop_border=2).item() == math.inf
        assert ssim(preds, target, crop_border=2).item() == pytest.approx(1.0)
        assert psnr(preds, target, crop_border=1).item() < math.inf

    def test_y_channel(self) -> None:
        white, black = torch.full((1, 3, 2, 2), 255.0), torch.zeros(1, 3, 2, 2)
        assert torch.allclose(rgb_to_y(white), torch.tensor(235.0), atol=1e-3)
        assert torch.allclose(rgb_to_y(black), torch.tensor(16.0))
        assert torch.allclose(rgb_to_y(white / 255, data_range=1.0), torch.tensor(235 / 255))

        preds, target = _images(2, 16, seed=0), _images(2, 16, seed=1)

        def y(img: Tensor) -> np.ndarray:  # BT.601 by hand on HWC 0..255
            rgb = img.permute(0, 2, 3, 1).double().numpy() / 255
            return 16 + rgb @ np.array([65.481, 128.553, 24.966])

        mse = ((y(preds) - y(target)) ** 2).mean(axis=(1, 2))
        expected = 10 * np.log10(255**2 / mse)
        values = psnr(preds, target, y_channel=True, reduction='none')
        np.testing.assert_allclose(values.numpy(), expected, rtol=1e-6)
        assert psnr(preds, target, y_channel=True).item() == pytest.approx(expected.mean())
        ssim_y = ssim(preds, target, y_channel=True, reduction='none')
        expected_ssim = [_ssim_by_hand(a, b) for a, b in zip(y(preds), y(target))]
        np.testing.assert_allclose(ssim_y.numpy(), expected_ssim, rtol=1e-5)
        assert ssim(preds, target, y_channel=True).item() == pytest.approx(np.mean(expected_ssim))

    def test_bad_inputs(self) -> None:
        x = _images(1, 16)
        with pytest.raises(ValueError, match='must both be'):
            psnr(x, x[..., :8])
        with pytest.raises(ValueError, match='crop_border=8 leaves nothing of a 16x16'):
            psnr(x, x, crop_border=8)
        with pytest.raises(ValueError, match='at least 11x11'):
            ssim(x, x, crop_border=3)
        with pytest.raises(ValueError, match='y_channel needs RGB'):
            psnr(x[:, :1], x[:, :1], y_channel=True)


# ------------------------------------------------------------------------------ pixel classifier


def _colour_scenes(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Blocky masks of four classes, each class a colour plus noise."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([2, 6, 8, 21])
    colours = torch.tensor([[110, 160, 70], [35, 65, 120], [185, 75, 60], [235, 235, 240]])
    blocks = torch.randint(0, 4, (n, 4, 4), generator=g)
    blocks = blocks.repeat_interleave(6, 1).repeat_interleave(6, 2)
    images = colours[blocks].permute(0, 3, 1, 2).float()
    images = (images + 10 * torch.randn(images.shape, generator=g)).clamp(0, 255)
    return images, ids[blocks]


class TestPixelClassifier:
    def test_colour_determines_class(self) -> None:
        images, masks = _colour_scenes(8, seed=0)
        clf = PixelClassifier(hidden=0).fit(images, masks, steps=150, max_pixels=3000)
        test_images, test_masks = _colour_scenes(4, seed=1)
        logits = clf(test_images)
        assert logits.shape == (4, NUM_CLASSES, 24, 24)
        pred = clf.predict(test_images)
        assert (pred == test_masks).float().mean() > 0.95
        assert set(pred.unique().tolist()) <= {2, 6, 8, 21}  # never an unseen class
        assert clf.seen.nonzero().flatten().tolist() == [2, 6, 8, 21]
        # a state dict round trip gives the same classifier
        fresh = PixelClassifier(hidden=0)
        fresh.load_state_dict(clf.state_dict())
        assert torch.equal(fresh.predict(test_images), pred)
        assert mask_fidelity(clf, test_images, test_masks).miou > 0.9

    def test_mini_corpus(self, mini_root: Path) -> None:
        from torchgeo_earthsynth.datasets import EarthSynth180K

        def stack(split: str) -> tuple[Tensor, Tensor]:
            ds = EarthSynth180K(mini_root, split=split)
            samples = [ds[i] for i in range(len(ds))]
            return torch.stack([s['image'] for s in samples]), torch.stack(
                [s['mask'] for s in samples]
            )

        clf = PixelClassifier().fit(*stack('train'), steps=150, max_pixels=10_000)
        images, masks = stack('val')
        real = mask_fidelity(clf, images, masks)
        noise = mask_fidelity(clf, torch.rand_like(images) * 255, masks)
        assert real.pixel_accuracy > 0.85 and real.miou > 0.7
        assert noise.miou < 0.3 < real.miou

    def test_bad_inputs(self) -> None:
        with pytest.raises(ValueError, match='positive odd'):
            PixelClassifier(kernel_sizes=(4,))
        with pytest.raises(ValueError, match='must match'):
            PixelClassifier().fit(torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 4, dtype=torch.long))
        with pytest.raises(ValueError, match=r'mask ids must lie in \[0, 66\]'):
            PixelClassifier().fit(torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), -1))
