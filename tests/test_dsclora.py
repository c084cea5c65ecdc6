# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DSCLoRA: SPAN with ConvLoRA adapters, distilled from a wider SPAN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from torchgeo_earthsynth.models.dsclora import (
    SPAN,
    ConvLoRA2d,
    fit_dsclora,
    spatial_affinity,
    spatial_affinity_loss,
    train_dsclora,
)


def _batches(bands: int = 4, scale: int = 2, count: int = 2) -> list[dict[str, torch.Tensor]]:
    """Tiny pairs whose high-res image is a smooth function of the low-res stack."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        low = torch.rand(2, bands, 6, 6, generator=generator) * 255
        image = nn.functional.interpolate(low[:, :3], scale_factor=scale, mode='nearest')
        out.append({'low_res': low, 'image': image})
    return out


@pytest.mark.parametrize(('bands', 'scale'), [(3, 2), (10, 2), (4, 3)])
def test_span_shapes_for_band_counts(bands: int, scale: int) -> None:
    model = SPAN(bands, scale, features=8, blocks=2, lora_rank=2)
    out = model(torch.rand(2, bands, 5, 7) * 255)
    assert out.shape == (2, 3, 5 * scale, 7 * scale)
    with pytest.raises(ValueError, match='expected low_res'):
        model(torch.rand(2, bands + 1, 5, 7))


def test_untrained_lora_student_is_the_base_network() -> None:
    torch.manual_seed(0)
    base = SPAN(3, 2, features=8, blocks=2)
    student = SPAN(3, 2, features=8, blocks=2)
    student.load_state_dict(base.state_dict())
    student.add_lora(2)
    low = torch.rand(1, 3, 6, 6) * 255
    # B starts at zero: the adapters change nothing until they train.
    torch.testing.assert_close(student(low), base(low))
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all('lora_' in n for n in trainable)


def test_merged_lora_equals_unmerged_forward() -> None:
    torch.manual_seed(0)
    model = SPAN(4, 2, features=8, blocks=3, lora_rank=2).eval()
    for adapter in model.adapters():
        nn.init.normal_(adapter.lora_B, std=0.05)
    low = torch.rand(2, 4, 6, 6) * 255
    with torch.no_grad():
        unmerged = model(low)
        model.merge_lora()
        merged = model(low)
        model.unmerge_lora()
        again = model(low)
    kernel = model.head.base.weight.detach().clone()
    model.merge_lora()
    assert not torch.allclose(model.head.base.weight, kernel)  # the merge edits the kernels
    model.unmerge_lora()
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(again, unmerged, rtol=1e-4, atol=1e-3)
    assert all(a.merged is False for a in model.adapters())


def test_conv_lora_rejects_grouped_convolutions() -> None:
    with pytest.raises(ValueError, match='ungrouped'):
        ConvLoRA2d(nn.Conv2d(4, 4, 3, groups=2), 2)


def test_spatial_affinity_ignores_channel_count_and_loss_is_zero_on_itself() -> None:
    feature = torch.rand(2, 5, 3, 4)
    affinity = spatial_affinity(feature)
    assert affinity.shape == (2, 12, 12)
    torch.testing.assert_close(torch.diagonal(affinity, dim1=1, dim2=2), torch.ones(2, 12))
    assert float(spatial_affinity_loss([feature], [feature])) == pytest.approx(0.0, abs=1e-6)
    wide = torch.rand(2, 9, 3, 4)
    assert float(spatial_affinity_loss([feature], [wide])) > 0


def test_distillation_loss_decreases() -> None:
    torch.manual_seed(0)
    teacher = SPAN(4, 2, features=12, blocks=2).eval()
    student = SPAN(4, 2, features=6, blocks=2, lora_rank=2)
    batches = _batches()
    losses = fit_dsclora(student, batches, 30, lr=5e-3, teacher=teacher, distill_weight=1.0)
    assert len(losses) == 30
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4


def test_train_dsclora_returns_a_merged_student() -> None:
    torch.manual_seed(0)
    student, losses = train_dsclora(
        _batches(), 4, 2, steps=3, teacher_features=8, student_features=4, blocks=2, rank=1
    )
    assert set(losses) == {'teacher', 'student', 'lora'}
    assert all(len(v) == 3 for v in losses.values())
    assert student.adapters() and all(a.merged for a in student.adapters())


def test_save_load_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SPAN(10, 2, features=8, blocks=2, rgb_bands=(2, 1, 0), lora_rank=2).eval()
    for adapter in model.adapters():
        nn.init.normal_(adapter.lora_B, std=0.05)
    model.merge_lora()
    low = torch.rand(1, 10, 5, 5) * 255
    with torch.no_grad():
        expected = model(low)
    model.save_pretrained(tmp_path / 'dsclora')
    assert (tmp_path / 'dsclora' / 'diffusion_pytorch_model.safetensors').is_file()
    assert all(a.merged for a in model.adapters())  # saving leaves the model as it was
    loaded = SPAN.from_pretrained(tmp_path / 'dsclora').eval()
    assert loaded.config.lora_rank == 2 and list(loaded.config.rgb_bands) == [2, 1, 0]
    with torch.no_grad():
        torch.testing.assert_close(loaded(low), expected, rtol=1e-4, atol=1e-3)
