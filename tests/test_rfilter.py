# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Tests for the R-Filter rules, results and summaries."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassJaccardIndex

from torchgeo_earthsynth.metrics import ClipScorer, tiny_open_clip
from torchgeo_earthsynth.rfilter import RFilter, RFilterResult, per_sample_miou, select

SIZE = 16
PROMPT = 'A satellite image of road'


@pytest.fixture(scope='module')
def clip() -> nn.Module:
    return tiny_open_clip().model


@pytest.fixture(scope='module')
def tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    return open_clip.get_tokenizer('ViT-B-32')


class FakeClip(nn.Module):
    """CLIP stand-in: the CLIP score of an image is 100 * (mean of channel 2) / 255."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.preprocess_cfg = {'size': SIZE, 'mean': (0.0, 0.0, 0.0), 'std': (1.0, 1.0, 1.0)}
        self.text_calls: list[int] = []  # how many prompts each encode_text call got

    def encode_image(self, x: Tensor) -> Tensor:
        m = x[:, 2].mean((1, 2))
        return torch.stack([m, (1 - m**2).clamp(min=0).sqrt()], 1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        self.text_calls.append(len(tokens))
        return torch.tensor([[1.0, 0.0]]).expand(tokens.shape[0], 2)


class CodeSegmenter(nn.Module):
    """Segmenter stand-in: predicts class round(channel 0 / 20) at each pixel."""

    def __init__(self, num_classes: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:  # x is image / 255
        pred = (x[:, 0] * 255 / 20).round().long().clamp(0, self.num_classes - 1)
        return F.one_hot(pred, self.num_classes).permute(0, 3, 1, 2).float() * 10


class ConfidenceModel(nn.Module):
    """Downstream stand-in: max-softmax confidence = channel 1 / 255 (clamped to [0.5, 1))."""

    def __init__(self, segmentation: bool) -> None:
        super().__init__()
        self.segmentation = segmentation

    def forward(self, x: Tensor) -> Tensor:
        p = x[:, 1].clamp(0.5, 0.999)
        if not self.segmentation:
            p = p.mean((1, 2))
        logit = torch.log(p) - torch.log1p(-p)
        return torch.stack([logit, torch.zeros_like(logit)], 1)


def textured(b: int, seed: int = 0, size: int = SIZE) -> Tensor:
    """Distinct textured images, no value at 0 or 255."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 200 + 20


def only(rule: str, **kwargs: object) -> RFilter:
    """An RFilter with just one rule on."""
    args: dict[str, object] = {
        'alignment': False,
        'layout': False,
        'sanity': False,
        'novelty': False,
        'clip_model': None,
    }
    args[rule] = True
    args.update(kwargs)
    return RFilter(**args)  # type: ignore[arg-type]


# --- helpers ---------------------------------------------------------------------------------


def test_per_sample_miou_by_hand() -> None:
    target = torch.tensor([[[1, 1], [2, 0]], [[0, 0], [0, 0]]])
    pred = torch.tensor([[[1, 2], [2, 2]], [[3, 3], [3, 3]]])
    ignored = per_sample_miou(pred, target, ignore_index=0)
    # class 1: 1 / 2, class 2: 1 / 2 (the pixel on background is ignored); sample 2: nothing.
    assert ignored[0].item() == pytest.approx(0.5)
    assert math.isnan(ignored[1].item())
    full = per_sample_miou(pred, target, ignore_index=None)
    # class 0: 0 / 1, class 1: 1 / 2, class 2: 1 / 3; sample 2: classes 0 and 3 both 0.
    assert full[0].item() == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)
    assert full[1].item() == 0.0
    assert full.dtype == torch.float32


def test_per_sample_miou_matches_torchmetrics() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (6, 12, 12), generator=g)
    pred = torch.randint(0, 6, (6, 12, 12), generator=g)  # class 5 only ever predicted
    target[2] = 0
    for ignore in (0, None):
        ours = per_sample_miou(pred, target, num_classes=6, ignore_index=ignore)
        for i in range(len(target)):
            jaccard = MulticlassJaccardIndex(6, average=None, ignore_index=ignore)
            iou = jaccard(pred[i], target[i])
            classes = [c for c in target[i].unique().tolist() if c != ignore]
            expected = iou[classes].mean() if classes else torch.tensor(math.nan)
            torch.testing.assert_close(ours[i], expected.float(), equal_nan=True)


def test_per_sample_miou_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r'must both be \[B, H, W\]'):
        per_sample_miou(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match='class ids must be >= 0, got -1'):
        per_sample_miou(torch.zeros(1, 2, 2), -torch.ones(1, 2, 2))


def test_alignment_scores_are_the_clip_score_metric(clip: nn.Module, tokenizer: object) -> None:
    images = textured(3, size=40)  # resized and centre-cropped to 32
    prompts = [PROMPT, 'A satellite image of water', PROMPT]
    with pytest.warns(UserWarning, match='random weights'):
        scorer = ClipScorer(clip, tokenizer)  # type: ignore[arg-type]
    rf = only('alignment', clip_model=clip, alignment_threshold=0.0)
    scores = rf({'image': images, 'prompt': prompts}).scores['alignment']
    assert scores.shape == (3,)
    assert ((scores >= 0) & (scores <= 100)).all()
    torch.testing.assert_close(scores, scorer.score(images, prompts))
    shared = only('alignment', clip_model=scorer, alignment_threshold=0.0)
    assert shared.scorer is scorer and shared.clip is clip
    torch.testing.assert_close(
        shared({'image': images, 'prompt': prompts}).scores['alignment'], scores
    )


def test_text_embeddings_are_cached() -> None:
    fake = FakeClip()
    calls = fake.text_calls
    rf = only('alignment', clip_model=fake, text_cache_size=2)
    images = textured(3)
    rf({'image': images, 'prompt': [PROMPT, PROMPT, 'x']})
    rf({'image': images, 'prompt': ['x', PROMPT, 'x']})
    assert calls == [2]  # each prompt encoded once
    rf({'image': images, 'prompt': ['y', 'y', 'y']})
    assert calls == [2, 1]
    rf({'image': images, 'prompt': [PROMPT] * 3})  # the cache outgrew its size: cleared first
    assert calls == [2, 1, 1]
    assert rf.scorer is not None and rf.scorer.num_cached_prompts == 1


# --- rules, one at a time ----------------------------------------------------------------------


def test_alignment_drops_low_scores() -> None:
    images = textured(4)
    images[:, 2] = torch.tensor([51.0, 25.5, 127.5, 50.0]).view(4, 1, 1)  # scores 20, 10, 50, 19.6
    rf = only('alignment', clip_model=FakeClip(), alignment_threshold=20.0)
    result = rf({'image': images, 'prompt': [PROMPT] * 4})
    assert result.keep.tolist() == [True, False, True, False]
    torch.testing.assert_close(
        result.scores['alignment'], torch.tensor([20.0, 10.0, 50.0, 19.6078]), atol=1e-3, rtol=0
    )
    assert result.reasons == ['', 'alignment 10.0 < 20.0', '', 'alignment 19.6 < 20.0']
    loose = only('alignment', clip_model=FakeClip(), alignment_threshold=5.0)
    assert loose({'image': images, 'prompt': [PROMPT] * 4}).keep.all()


def test_layout_drops_poor_masks() -> None:
    mask = torch.zeros(3, SIZE, SIZE, dtype=torch.long)
    mask[:, :, : SIZE // 2] = 4
    mask[:, :, SIZE // 2 :] = 6
    pred = mask.clone()
    pred[1, :, SIZE // 2 :] = 4  # class 4: 1/2, class 6: 0/1 -> 0.25
    pred[2] = 0  # all wrong
    images = textured(3)
    images[:, 0] = pred * 20.0
    rf = only('layout', segmenter=CodeSegmenter(), layout_threshold=0.3)
    result = rf({'image': images, 'mask': mask})
    torch.testing.assert_close(result.scores['layout'], torch.tensor([1.0, 0.25, 0.0]))
    assert result.keep.tolist() == [True, False, False]
    assert result.reasons == ['', 'layout 0.25 < 0.30', 'layout 0.00 < 0.30']
    loose = only('layout', segmenter=CodeSegmenter(), layout_threshold=0.2)
    assert loose({'image': images, 'mask': mask}).keep.tolist() == [True, True, False]


def test_layout_label_map_and_background() -> None:
    # The segmenter predicts its own classes 0..2, which are vocabulary ids 0, 6 and 8.
    mask = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    mask[0, : SIZE // 2] = 6
    mask[0, SIZE // 2 :] = 8
    images = textured(2)
    images[0, 0] = torch.where(mask[0] == 6, 20.0, 40.0)
    images[1, 0] = 40.0  # predicts 8 everywhere, but the mask is all background
    rf = only('layout', segmenter=CodeSegmenter(3), segmenter_label_map=[0, 6, 8])
    result = rf({'image': images, 'mask': mask})
    assert result.scores['layout'][0].item() == 1.0
    assert math.isnan(result.scores['layout'][1].item())
    assert result.keep.tolist() == [True, True]  # nothing labelled: nothing to contradict
    strict = only(
        'layout',
        segmenter=CodeSegmenter(3),
        segmenter_label_map=[0, 6, 8],
        layout_ignore_background=False,
    )
    result = strict({'image': images, 'mask': mask})
    assert result.scores['layout'].tolist() == [1.0, 0.0]
    assert result.reasons[1] == 'layout 0.00 < 0.30'
    short = only('layout', segmenter=CodeSegmenter(3), segmenter_label_map=[0, 6])
    with pytest.raises(
        ValueError, match='segmenter has 3 classes but segmenter_label_map has only 2'
    ):
        short({'image': images, 'mask': mask})


def test_sanity_drops_nan_flat_saturated() -> None:
    images = textured(6)
    images[1, 0, 3, 3] = float('nan')
    images[2, 1, 0, 0] = float('inf')
    images[3] = 100.0  # flat
    images[4, :, : SIZE * 3 // 4] = 255.0  # 75 % saturated
    images[5] = 255.0  # flat and saturated
    result = only('sanity')({'image': images})
    assert result.keep.tolist() == [True, False, False, False, False, False]
    assert result.reasons == [
        '',
        'sanity: non-finite',
        'sanity: non-finite',
        'sanity: flat (std 0.0 < 2.0)',
        'sanity: saturated (0.75 > 0.50)',
        'sanity: flat (std 0.0 < 2.0), saturated (1.00 > 0.50)',
    ]
    assert result.scores['sanity'].tolist() == [1, 0, 0, 0, 0, 0]
    assert result.scores['sanity_finite'].tolist() == [1, 0, 0, 1, 1, 1]
    assert result.scores['sanity_saturation'][4].item() == pytest.approx(0.75)
    lenient = only('sanity', flat_threshold=0.0, saturation_threshold=0.8)
    assert lenient({'image': images}).keep.tolist() == [True, False, False, True, True, False]


def test_sanity_flat_is_per_channel() -> None:
    images = textured(4)
    colour = torch.tensor([100.0, 150.0, 80.0])
    images[1] = colour[:, None, None]  # uniform coloured: one std over channels is 29
    images[2] = colour.flip(0)[:, None, None]
    images[3, 1:] = colour[1:, None, None]  # only red varies: not flat
    result = only('sanity')({'image': images})
    assert result.keep.tolist() == [True, False, False, True]
    assert result.reasons[1] == 'sanity: flat (std 0.0 < 2.0)'
    assert result.scores['sanity_std'][3].item() == pytest.approx(
        images[3, 0].std(correction=0).item(), rel=1e-4
    )


def test_novelty_in_batch_duplicates_and_memory() -> None:
    images = textured(4)
    images[2] = images[0]
    images[3] = images[0] * 0.5 + 60  # same pattern, other brightness: still a duplicate
    rf = only('novelty', novelty_threshold=0.95)
    result = rf({'image': images})
    assert result.keep.tolist() == [True, True, False, False]
    assert result.reasons[2] == 'novelty 1.00 > 0.95 (kept sample)'
    assert result.scores['novelty'][2].item() == pytest.approx(1.0, abs=1e-5)
    assert result.scores['novelty'][1].item() < 0.5
    # The memory remembers kept samples across batches until reset.
    again = rf({'image': images[1:2]})
    assert again.keep.tolist() == [False]
    assert again.reasons == ['novelty 1.00 > 0.95 (kept sample)']
    rf.reset()
    assert rf({'image': images[1:2]}).keep.tolist() == [True]


def test_novelty_memory_is_bounded() -> None:
    images = textured(3, seed=5)
    rf = only('novelty', novelty_memory=2)
    for i in range(3):
        assert rf({'image': images[i : i + 1]}).keep.item()
    assert rf({'image': images[0:1]}).keep.item()  # forgotten
    assert not rf({'image': images[2:3]}).keep.item()  # remembered
    none = only('novelty', novelty_memory=0)
    assert none({'image': images[:1]}).keep.item()
    assert none({'image': images[:1]}).keep.item()


def test_novelty_only_remembers_kept_samples() -> None:
    # The first copy fails sanity, so the second copy is the first kept one.
    images = textured(2)
    images[0, 0, 0, 0] = float('nan')
    images[1] = images[0].nan_to_num(120.0)
    rf = only('novelty', sanity=True)
    result = rf({'image': images})
    assert result.keep.tolist() == [False, True]
    assert result.reasons == ['sanity: non-finite', '']


def test_novelty_against_reference() -> None:
    images = textured(3)
    reference = textured(3, seed=9)
    reference[0] = images[0]
    reference[1] = images[1] * 0.8 + 10
    rf = only('novelty')
    result = rf({'image': images, 'reference': reference})
    assert result.keep.tolist() == [False, False, True]
    assert result.reasons[0] == 'novelty 1.00 > 0.95 (reference)'
    assert result.reasons[1] == 'novelty 1.00 > 0.95 (reference)'
    with pytest.raises(ValueError, match=r"batch\['reference'\] must be a tensor \[B, 3, H, W\]"):
        rf({'image': images, 'reference': reference[:2]})
    other_key = only('novelty', reference_key='source_image')
    assert other_key({'image': images, 'reference': reference}).keep.all()


def test_novelty_with_clip_features(clip: nn.Module) -> None:
    images = textured(3, size=32)
    images[2] = images[0]
    rf = only('novelty', clip_model=clip, novelty_features='clip', novelty_threshold=0.999)
    result = rf({'image': images})
    assert result.keep.tolist() == [True, True, False]
    assert 'alignment' not in result.scores


@pytest.mark.parametrize('segmentation', [False, True])
def test_informativeness_band(segmentation: bool) -> None:
    images = textured(3)
    images[:, 1] = torch.tensor([0.6, 0.99, 0.51]).view(3, 1, 1) * 255
    model = ConfidenceModel(segmentation)
    rf = only('informativeness', informer=model, confidence_low=0.55, confidence_high=0.9)
    result = rf({'image': images})
    torch.testing.assert_close(result.scores['informativeness'], torch.tensor([0.6, 0.99, 0.51]))
    assert result.keep.tolist() == [True, False, False]
    assert result.reasons == [
        '',
        'informativeness 0.99 > 0.90 (too easy)',
        'informativeness 0.51 < 0.55 (too hard)',
    ]


# --- switches, configuration, errors ---------------------------------------------------------


def test_defaults_and_missing_models(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger='torchgeo_earthsynth.rfilter'):
        rf = RFilter(clip_model=None, informativeness=True)
    assert rf.enabled == {
        'alignment': False,
        'layout': False,
        'objects': False,  # off by default: nobody asked for it, no note
        'sanity': True,
        'novelty': True,
        'informativeness': False,
    }
    assert "R-Filter rule 'alignment' is off: no CLIP model given" in caplog.text
    assert "R-Filter rule 'layout' is off: no segmenter given" in caplog.text
    assert "R-Filter rule 'informativeness' is off: no informer model given" in caplog.text
    rows = {row['rule']: row for row in rf.summary().rows}
    assert rows['layout']['note'] == 'off: no segmenter given'
    assert rows['layout']['enabled'] is False
    # Informativeness is off by default without a note: nobody asked for it.
    quiet = RFilter(clip_model=None, segmenter=CodeSegmenter(), informer=ConfidenceModel(False))
    assert not quiet.enabled['informativeness']
    assert 'informativeness' not in quiet.notes
    with pytest.raises(ValueError, match=r"batch\['mask'\] must be an int tensor"):
        quiet({'image': textured(1)})
    result = quiet({'image': textured(1), 'mask': torch.zeros(1, SIZE, SIZE, dtype=torch.long)})
    assert set(result.scores) == {
        'layout',
        'sanity',
        'sanity_finite',
        'sanity_std',
        'sanity_saturation',
        'novelty',
    }


def test_switches_turn_rules_off() -> None:
    images = textured(2)
    images[1] = 100.0
    assert not only('sanity')({'image': images}).keep[1]
    off = RFilter(clip_model=FakeClip(), alignment=False, sanity=False, novelty=False)
    result = off({'image': images})
    assert result.keep.tolist() == [True, True]
    assert result.scores == {}
    assert set(off.counts) == {'total'}
    assert off.clip is None  # not even kept around


def test_clip_novelty_without_clip_is_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger='torchgeo_earthsynth.rfilter'):
        rf = RFilter(clip_model=None, novelty_features='clip')
    assert not rf.enabled['novelty']
    assert "novelty_features='clip' needs a CLIP model" in caplog.text


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'alignment_threshold': 120.0}, r'alignment_threshold must be in \[0, 100\], got 120.0'),
        ({'layout_threshold': -0.1}, r'layout_threshold must be in \[0, 1\]'),
        ({'novelty_threshold': 2}, r'novelty_threshold must be in \[-1, 1\]'),
        ({'confidence_low': 0.9, 'confidence_high': 0.5}, 'confidence_high must be in'),
        ({'normalize_std': (1.0, 0.0, 1.0)}, 'normalize_std must be of length 1 or 3, all > 0'),
        ({'novelty_size': 0}, 'novelty_size must be >= 1'),
        ({'segmenter_label_map': [0, -1]}, 'segmenter_label_map must be a flat list'),
        ({'cpu_micro_batch': 0}, 'cpu_micro_batch must be None or >= 1'),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RFilter(clip_model=None, **kwargs)  # type: ignore[arg-type]


def test_bad_batches() -> None:
    rf = RFilter(clip_model=FakeClip())
    with pytest.raises(ValueError, match=r"batch\['image'\] must be a tensor \[B, 3, H, W\]"):
        rf({'image': torch.zeros(3, SIZE, SIZE)})
    with pytest.raises(ValueError, match=r"batch\['prompt'\] must hold 2 prompts"):
        rf({'image': textured(2), 'prompt': [PROMPT]})
    with pytest.raises(ValueError, match=r"batch\['prompt'\] must hold 2 prompts"):
        rf({'image': textured(2)})


def test_empty_batch() -> None:
    rf = RFilter(clip_model=FakeClip(), segmenter=CodeSegmenter())
    result = rf({'image': torch.zeros(0, 3, SIZE, SIZE), 'prompt': []})
    assert result.keep.shape == (0,)
    assert result.reasons == []
    assert rf.counts['total'] == {'seen': 0, 'kept': 0, 'dropped': 0}


def test_models_stay_in_eval_mode() -> None:
    rf = RFilter(
        clip_model=tiny_open_clip().model, segmenter=nn.Sequential(nn.Conv2d(3, 4, 1), nn.Dropout())
    )
    rf.train()
    assert rf.clip is not None and rf.segmenter is not None
    assert not rf.clip.training
    assert not rf.segmenter.training


# --- loading -----------------------------------------------------------------------------------


def test_named_clip_that_cannot_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HOME', str(tmp_path))  # nothing cached
    with pytest.raises(
        RuntimeError,
        match="could not load open_clip model 'ViT-B-32' with "
        r"pretrained='openai' \(CLIP weights ViT-B-32/openai are not in the "
        'local cache',
    ) as info:
        RFilter()
    assert 'clip_checkpoint=<file>' in str(info.value)
    with pytest.raises(ValueError, match=r"clip_checkpoint '/no/such\.pt' is not a file"):
        RFilter(clip_checkpoint='/no/such.pt')


def test_named_clip_from_local_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer: object
) -> None:
    factory = open_clip.factory
    monkeypatch.setattr(factory, '_MODEL_CONFIG_PATHS', list(factory._MODEL_CONFIG_PATHS))
    monkeypatch.setattr(factory, '_MODEL_CONFIGS', dict(factory._MODEL_CONFIGS))
    config = {
        'embed_dim': 32,
        'vision_cfg': {
            'layers': 1,
            'width': 32,
            'patch_size': 8,
            'image_size': 32,
            'head_width': 16,
        },
        'text_cfg': {
            'context_length': 77,
            'vocab_size': 49408,
            'width': 32,
            'heads': 2,
            'layers': 1,
        },
    }
    (tmp_path / 'tiny-rfilter.json').write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    source = tiny_open_clip(seed=3).model
    torch.save(source.state_dict(), tmp_path / 'tiny.pt')
    rf = RFilter(clip_model='tiny-rfilter', clip_checkpoint=tmp_path / 'tiny.pt', segmenter=None)
    images = textured(2, size=32)
    prompts = [PROMPT, 'A satellite image of water']
    expected = ClipScorer(source, tokenizer, pretrained=True).score(images, prompts)  # type: ignore[arg-type]
    result = rf({'image': images, 'prompt': prompts})
    torch.testing.assert_close(result.scores['alignment'], expected)


def test_segmenter_and_informer_from_torchgeo_checkpoint(tmp_path: Path) -> None:
    from lightning import Trainer

    from torchgeo_earthsynth.compat import SemanticSegmentationTask

    torch.manual_seed(0)
    task = SemanticSegmentationTask(model='fcn', in_channels=3, num_classes=4, num_filters=8)
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator='cpu')
    trainer.strategy.connect(task)
    path = tmp_path / 'seg.ckpt'
    trainer.save_checkpoint(path)
    label_map = [0, 6, 8, 4]
    rf = RFilter(
        clip_model=None,
        segmenter=path,
        segmenter_label_map=label_map,
        informativeness=True,
        informer=str(path),
        confidence_low=0.0,
        confidence_high=1.0,
    )
    assert isinstance(rf.segmenter, SemanticSegmentationTask)
    assert not rf.segmenter.training
    images = textured(2)
    mask = torch.tensor(label_map)[torch.randint(0, 4, (2, SIZE, SIZE))]
    result = rf({'image': images, 'mask': mask})
    with torch.no_grad():
        logits = task.eval()(images / 255)
    pred = torch.tensor(label_map)[logits.argmax(1)]
    torch.testing.assert_close(result.scores['layout'], per_sample_miou(pred, mask, 67))
    expected = logits.softmax(1).amax(1).mean((1, 2))
    torch.testing.assert_close(result.scores['informativeness'], expected)
    with pytest.raises(ValueError, match=r"segmentation checkpoint '/no/seg\.ckpt' is not a file"):
        RFilter(clip_model=None, segmenter='/no/seg.ckpt')


def test_informer_from_a_torchgeo_classification_checkpoint(tmp_path: Path) -> None:
    from lightning import Trainer

    from torchgeo_earthsynth.compat import ClassificationTask

    torch.manual_seed(0)
    task = ClassificationTask(model='resnet18', in_channels=3, num_classes=3)
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator='cpu')
    trainer.strategy.connect(task)
    path = tmp_path / 'cls.ckpt'
    trainer.save_checkpoint(path)
    images = textured(3, size=32)
    with torch.no_grad():
        confidence = task.eval()(images / 255).softmax(1).amax(1)
    low, high = float(confidence.min()), float(confidence.max())
    rf = only(
        'informativeness',
        informer=path,
        informer_task='classification',
        confidence_low=low,
        confidence_high=(low + high) / 2,
    )
    assert isinstance(rf.informer, ClassificationTask) and not rf.informer.training
    result = rf({'image': images})
    torch.testing.assert_close(result.scores['informativeness'], confidence)
    assert result.keep.tolist() == (confidence <= (low + high) / 2).tolist()
    assert any('too easy' in reason for reason in result.reasons)


# --- whole filter ------------------------------------------------------------------------------


def mixed_batch(size: int = 32) -> dict[str, object]:
    """Eight samples: fine ones, a NaN, a flat, a duplicate pair, one close to its reference."""
    images = textured(8, seed=2, size=size)
    mask = torch.randint(0, 5, (8, size, size), generator=torch.Generator().manual_seed(3))
    images[2, 0, 1, 1] = float('nan')
    images[3] = 90.0
    images[6] = images[1]
    reference = textured(8, seed=4, size=size)
    reference[5] = images[5] + 1.0
    water, building = 'A satellite image of water', 'A satellite image of building'
    prompts = [PROMPT, water, PROMPT, PROMPT, building, PROMPT, PROMPT, water]
    return {'image': images, 'mask': mask, 'prompt': prompts, 'reference': reference}


def full_filter(clip: nn.Module) -> RFilter:
    torch.manual_seed(0)
    segmenter = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1))
    informer = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return RFilter(
        clip_model=clip,
        segmenter=segmenter,
        informativeness=True,
        informer=informer,
        confidence_low=0.0,
        confidence_high=0.3,
    )


def test_batched_equals_per_image(clip: nn.Module) -> None:
    batch = mixed_batch()
    batched = full_filter(clip)
    # Thresholds inside the score ranges, so each model-based rule drops some samples.
    probe = full_filter(clip)(batch, update=False)
    batched.alignment_threshold = float(probe.scores['alignment'].quantile(0.25))
    batched.layout_threshold = float(probe.scores['layout'].quantile(0.25))
    batched.confidence_high = float(probe.scores['informativeness'].quantile(0.75))
    single = full_filter(clip)
    single.alignment_threshold = batched.alignment_threshold
    single.layout_threshold = batched.layout_threshold
    single.confidence_high = batched.confidence_high

    result = batched(batch)
    parts = [single(select(batch, torch.arange(8) == i)) for i in range(8)]
    assert result.keep.tolist() == [bool(p.keep) for p in parts]
    assert result.reasons == [p.reasons[0] for p in parts]
    for name, score in result.scores.items():
        torch.testing.assert_close(
            score, torch.cat([p.scores[name] for p in parts]), atol=1e-4, rtol=1e-4
        )
    assert batched.counts == single.counts
    assert 0 < result.num_kept < 8
    for rule in ('alignment', 'layout', 'sanity', 'novelty', 'informativeness'):
        assert any(rule in r for r in result.reasons), rule
    reasons = result.reasons
    assert 'sanity: non-finite' in reasons[2]
    assert 'sanity: flat' in reasons[3]
    assert 'novelty 1.00 > 0.95 (reference)' in reasons[5]
    if result.keep[1]:
        assert 'novelty 1.00 > 0.95 (kept sample)' in reasons[6]


def test_cpu_micro_batches_give_the_same_scores(clip: nn.Module) -> None:
    batch = mixed_batch()
    whole, chunked = full_filter(clip), full_filter(clip)
    whole.cpu_micro_batch, chunked.cpu_micro_batch = None, 3
    seen: list[int] = []
    assert chunked.segmenter is not None
    chunked.segmenter.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    expected, result = whole(batch), chunked(batch)
    assert seen == [3, 3, 2]  # 8 images in chunks of 3
    assert result.keep.tolist() == expected.keep.tolist()
    for name, score in expected.scores.items():
        torch.testing.assert_close(result.scores[name], score, atol=1e-5, rtol=1e-5)


def test_reasons_are_joined_in_rule_order() -> None:
    images = textured(1)
    images[0, 2] = 0.0  # CLIP score 0 with the fake
    images[0, 0, 0, 0] = float('nan')
    rf = RFilter(clip_model=FakeClip())
    result = rf({'image': images, 'prompt': [PROMPT]})
    assert result.reasons == ['alignment 0.0 < 20.0; sanity: non-finite']


def test_summary_counts_and_tables(tmp_path: Path) -> None:
    rf = RFilter(clip_model=FakeClip(), alignment_threshold=20.0)
    images = textured(4)
    images[:, 2] = 100.0  # CLIP score 39
    images[1, 2] = 10.0  # CLIP score 4 -> alignment drops it
    images[2] = 100.0  # flat, CLIP score 39 -> sanity drops it
    images[3] = images[0]  # duplicate -> novelty drops it
    first = rf({'image': images, 'prompt': [PROMPT] * 4})
    assert first.keep.tolist() == [True, False, False, False]
    assert isinstance(first, RFilterResult)
    second = rf({'image': images[:2], 'prompt': [PROMPT] * 2})  # sample 0 now seen before
    assert second.keep.tolist() == [False, False]
    assert second.counts['total'] == {'seen': 6, 'kept': 1, 'dropped': 5}
    assert first.counts['total'] == {'seen': 4, 'kept': 1, 'dropped': 3}  # a snapshot
    rows = {row['rule']: row for row in rf.summary().rows}
    assert (rows['alignment']['seen'], rows['alignment']['dropped']) == (6, 2)
    assert (rows['sanity']['seen'], rows['sanity']['dropped']) == (6, 1)
    assert (rows['novelty']['seen'], rows['novelty']['dropped']) == (6, 2)
    assert rows['layout']['enabled'] is False
    assert rows['total']['kept'] == 1
    summary = rf.summary()
    text = summary.to_csv(tmp_path / 'summary.csv')
    assert (tmp_path / 'summary.csv').read_text() == text
    lines = text.splitlines()
    assert lines[0] == 'rule,enabled,criterion,seen,kept,dropped,note'
    assert lines[1] == 'alignment,True,CLIP score >= 20,6,4,2,'
    assert len(lines) == 8  # the header, six rules (objects too) and the total
    markdown = summary.to_markdown()
    assert (
        markdown.splitlines()[0] == '| rule | enabled | criterion | seen | kept | dropped | note |'
    )
    assert '| total | True | all enabled rules | 6 | 1 | 5 |  |' in markdown
    assert str(summary) == markdown
    rf.reset()
    assert rf.counts['total'] == {'seen': 0, 'kept': 0, 'dropped': 0}


def test_update_false_changes_nothing() -> None:
    rf = only('novelty')
    images = textured(2)
    rf({'image': images}, update=False)
    assert rf.counts['total']['seen'] == 0
    assert rf({'image': images}).keep.all()


def test_filter_and_select() -> None:
    images = textured(3)
    images[1] = 50.0
    batch = {
        'image': images,
        'mask': torch.zeros(3, SIZE, SIZE, dtype=torch.long),
        'prompt': ['a', 'b', 'c'],
        'source': ('x', 'y', 'z'),
        'categories': torch.eye(3),
        'note': 'kept as is',
    }
    kept, result = only('sanity').filter(batch)
    assert result.keep.tolist() == [True, False, True]
    assert kept['prompt'] == ['a', 'c']
    assert kept['source'] == ('x', 'z')
    torch.testing.assert_close(kept['image'], images[[0, 2]])
    torch.testing.assert_close(kept['categories'], torch.eye(3)[[0, 2]])
    assert kept['mask'].shape == (2, SIZE, SIZE)
    assert kept['note'] == 'kept as is'
