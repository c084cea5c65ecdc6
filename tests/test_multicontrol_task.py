# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The multi-condition family trained from YAML: per-map dropout, export, any subset of maps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from torchgeo_earthsynth.controls import ControlExtractor
from torchgeo_earthsynth.lightning_modules import MultiControlNetTask
from torchgeo_earthsynth.models import NamedMultiControlNet
from torchgeo_earthsynth.synthesis import Synthesizer

SIZE = 32
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'multicontrol_tiny.yaml'


@pytest.fixture
def batch(mini_batch: dict[str, Any]) -> dict[str, Any]:
    return mini_batch


def with_residuals(task: MultiControlNetTask) -> MultiControlNetTask:
    """Untrained ControlNets end in zero convolutions: give them an effect, as after a step."""
    generator = torch.Generator().manual_seed(0)
    for net in task.controlnet.nets:
        for zero_conv in (*net.controlnet_down_blocks, net.controlnet_mid_block):
            zero_conv.weight.data = torch.randn(zero_conv.weight.shape, generator=generator) * 0.1
    return task


def test_maps_from_the_batch_and_per_map_dropout(batch: dict[str, Any]) -> None:
    task = MultiControlNetTask(image_size=SIZE, control_dropout=0.5)
    assert isinstance(task.controlnet, NamedMultiControlNet)
    assert task.controlnet.names == ('seg', 'edges') and task.hparams['control_dropout'] == 0.5
    task.eval()
    inputs = task.condition_inputs(batch, (SIZE, SIZE))
    expected = ControlExtractor(['seg', 'edges'])(batch)
    assert torch.equal(inputs['seg'], expected['seg'])
    assert torch.equal(inputs['edges'], expected['edges'])
    assert torch.equal(inputs['control_scales'], torch.ones(4, 2))  # no dropout outside training
    task.train()
    torch.manual_seed(0)
    drawn = torch.cat(
        [task.condition_inputs(batch, (SIZE, SIZE))['control_scales'] for _ in range(50)]
    )
    assert set(drawn.unique().tolist()) == {0.0, 1.0}
    assert 0.4 < drawn.mean() < 0.6  # each map, each sample: kept with p = 0.5
    # a map whose source the batch lacks (no `dem` in the mini corpus) is dropped: zeros, scale 0
    task = MultiControlNetTask(controls=['seg', 'depth'], image_size=SIZE).eval()
    inputs = task.condition_inputs(batch, (SIZE, SIZE))
    assert torch.equal(inputs['control_scales'], torch.tensor([[1.0, 0.0]] * 4))
    assert inputs['depth'].shape == (4, 1, SIZE, SIZE) and not inputs['depth'].any()
    assert task.generation_inputs(batch, 2)['controls'].keys() == {'seg'}


def test_a_dropped_map_is_the_map_left_out(batch: dict[str, Any]) -> None:
    task = with_residuals(MultiControlNetTask(image_size=SIZE, control_dropout=0.0)).eval()
    inputs = task.condition_inputs(batch, (SIZE, SIZE))
    noisy = torch.randn(4, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(1))
    steps = torch.tensor([10, 300, 600, 900])
    text = task.prompt_encoder(list(batch['prompt']))
    scales = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    with torch.no_grad():
        pred = task(noisy, steps, text, **{**inputs, 'control_scales': scales})
        # at inference a map left out does not run: seg alone, edges alone, the UNet alone
        seg_only = task.controlnet.subset(['seg'])
        down, mid = seg_only(noisy, steps, text, [inputs['seg']], [1.0], return_dict=False)
        seg_pred = task.unet(
            noisy,
            steps,
            text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        alone = task.unet(noisy, steps, text).sample
        both = task(noisy, steps, text, **inputs)
    torch.testing.assert_close(pred[:2], seg_pred[:2])
    torch.testing.assert_close(pred[3:], alone[3:])
    assert (both - pred).abs().amax() > 1e-3  # and each map changes the prediction when on
    assert (pred[2] - alone[2]).abs().amax() > 1e-3


def test_dropped_maps_get_no_gradient(batch: dict[str, Any]) -> None:
    task = MultiControlNetTask(controls=['seg', 'depth'], image_size=SIZE, control_dropout=0.0)
    with_residuals(task).train()
    task.diffusion_loss(batch).backward()  # no `dem`: depth dropped for every sample
    seg, depth = task.controlnet.nets
    assert seg.controlnet_mid_block.weight.grad.abs().sum() > 0
    grad = depth.controlnet_mid_block.weight.grad
    assert grad is None or not grad.any()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r'control_dropout must be in \[0, 1\]'):
        MultiControlNetTask(control_dropout=1.5)
    with pytest.raises(ValueError, match=r"unknown controls \['roads'\]; known: \['edges'"):
        MultiControlNetTask(controls=['seg', 'roads'], image_size=SIZE)
    with pytest.raises(ValueError, match='each map once'):
        MultiControlNetTask(controls=['seg', 'seg'], image_size=SIZE)
    with pytest.raises(ValueError, match='expected a saved multi-condition ControlNet'):
        MultiControlNetTask(controlnet=str(tmp_path), image_size=SIZE)


def test_cli_fit_yaml_export_takes_any_subset(
    tmp_path: Path, batch: dict[str, Any], fit_fast: Callable[..., Path]
) -> None:
    fit_fast(CONFIG)
    export = tmp_path / 'export'
    meta = json.loads((export / 'earthsynth.json').read_text())
    assert meta['controls'] == ['seg', 'edges'] and 'condition_encoding' not in meta
    assert 'Synthesizer.from_pretrained' in (export / 'README.md').read_text()
    synth = Synthesizer.from_pretrained(export, num_inference_steps=2, guidance_scale=2.0)
    assert synth.takes('controls') and synth.pipeline.controlnet.names == ('seg', 'edges')
    for net in synth.pipeline.controlnet.nets:  # trained: the zero convolutions moved
        assert net.controlnet_mid_block.weight.abs().sum() > 0

    controls = ControlExtractor(['seg', 'edges'])(batch)
    prompts = list(batch['prompt'])

    def generate(**kwargs: Any) -> torch.Tensor:
        return synth.generate(None, prompts, seeds=range(4), size=(SIZE, SIZE), **kwargs)

    both = generate(controls=controls)
    seg_only = generate(controls={'seg': controls['seg']})
    edges_only = generate(controls={'edges': controls['edges']})
    assert both.shape == (4, 3, SIZE, SIZE)
    # scale 0 removes a map's effect after training too; each map changes the output when on
    assert torch.equal(generate(controls=controls, control_scales={'edges': 0.0}), seg_only)
    assert torch.equal(generate(controls=controls, control_scales={'seg': 0.0}), edges_only)
    assert (both - seg_only).abs().mean() > 0.02 and (both - edges_only).abs().mean() > 0.02

    # the export starts a new run (same controls), and a different set is refused
    task = MultiControlNetTask(controlnet=str(export), image_size=SIZE)
    loaded, saved = task.controlnet.nets[0], synth.pipeline.controlnet.nets[0]
    assert torch.equal(loaded.controlnet_mid_block.weight, saved.controlnet_mid_block.weight)
    with pytest.raises(ValueError, match=r"takes controls \['seg', 'edges'\], this task \['seg'\]"):
        MultiControlNetTask(controlnet=str(export), controls=['seg'], image_size=SIZE)
