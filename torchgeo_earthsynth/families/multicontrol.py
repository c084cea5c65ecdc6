# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Multi-condition requests of a :class:`.Synthesizer` (one ControlNet per named control map).

A request gives any subset of the model's controls, each with a scale (default 1.0). Only
the ControlNets of controls that are given with a non-zero scale run: a missing control is
skipped, not zero-filled, and a zero scale is the same as leaving the control out. With
none left, the base model runs alone (text only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor

from torchgeo_earthsynth.controls import CONTROLS, ControlExtractor
from torchgeo_earthsynth.models import NamedMultiControlNet
from torchgeo_earthsynth.synthesis.parts import build_pipeline, build_text_pipeline

if TYPE_CHECKING:
    from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

__all__ = (
    'check_controls',
    'controlled_pipeline',
    'controls_from_masks',
    'controls_size',
    'multicontrol_of',
)


def multicontrol_of(pipeline: Any) -> NamedMultiControlNet | None:
    """The pipeline's named multi-condition ControlNet, if it has one."""
    controlnet = getattr(pipeline, 'controlnet', None)
    return controlnet if isinstance(controlnet, NamedMultiControlNet) else None


def controls_from_masks(synth: Synthesizer, masks: Tensor) -> dict[str, Tensor]:
    """The maps of the synthesizer's model that class masks give (``seg``, ``road``).

    Args:
        synth: the synthesizer.
        masks: int [B, H, W] vocabulary ids.

    Returns:
        ``{name: float [B, C, H, W]}`` for each of the model's controls made from a mask
        (none for a model that takes no controls).
    """
    model = multicontrol_of(synth.pipeline)
    names = [
        name
        for name in (model.names if model is not None else ())
        if name in CONTROLS and CONTROLS[name].source == 'mask'
    ]
    controls: dict[str, Tensor] = ControlExtractor(names)({'mask': masks})
    return controls


def check_controls(
    synth: Synthesizer,
    controls: Mapping[str, Tensor] | None,
    control_scales: Mapping[str, float] | None,
    count: int,
) -> None:
    """Refuse controls the model does not take or of the wrong shape.

    Raises:
        ValueError: naming the control, what was expected and the known controls.
    """
    model = multicontrol_of(synth.pipeline)
    if model is None:
        if controls or control_scales:
            raise ValueError(
                'this synthesizer is not a multi-condition ControlNet: it takes no controls '
                '(pass None)'
            )
        return
    channels = {name: net.config.conditioning_channels for name, net in model.by_name().items()}
    for what, names in (('controls', controls or {}), ('control_scales', control_scales or {})):
        unknown = [name for name in names if name not in channels]
        if unknown:
            raise ValueError(f'{what}: unknown {unknown}; this model takes {list(channels)}')
    for name, values in (controls or {}).items():
        expected = [count, channels[name]]
        if values.dim() != 4 or list(values.shape[:2]) != expected:
            raise ValueError(
                f'controls[{name!r}]: expected float [{count}, {channels[name]}, H, W] in [0, 1] '
                f'for {count} prompts, got {list(values.shape)}'
            )


def controls_size(controls: Mapping[str, Tensor] | None) -> tuple[int, int] | None:
    """The (height, width) of the first control, the default output size of a request."""
    for values in (controls or {}).values():
        return int(values.shape[-2]), int(values.shape[-1])
    return None


def controlled_pipeline(
    synth: Synthesizer,
    controls: Mapping[str, Tensor] | None,
    control_scales: Mapping[str, float] | None,
    batch: slice,
    size: tuple[int, int],
) -> tuple[Any, dict[str, Any]]:
    """The pipeline to run for a batch and its control inputs.

    Args:
        synth: the synthesizer (its pipeline holds a :class:`NamedMultiControlNet`).
        controls: ``{name: float [B, C, H, W] in [0, 1]}``, any subset of the model's.
        control_scales: ``{name: scale}``; a control not named here has scale 1.0.
        batch: the samples of this batch.
        size: the output (height, width); controls are resized to it (``seg`` NEAREST).

    Returns:
        A pipeline sharing the synthesizer's modules (a ControlNet pipeline over the active
        controls, or a text pipeline when none is active) and its keyword inputs.
    """
    model = multicontrol_of(synth.pipeline)
    assert model is not None
    scales = {name: float((control_scales or {}).get(name, 1.0)) for name in controls or {}}
    active = [name for name in model.names if scales.get(name, 0.0) != 0.0]
    if not active:
        pipeline = build_text_pipeline(synth.pipeline)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline, {}
    assert controls is not None
    pipeline = build_pipeline(synth.pipeline, model.subset(active))
    pipeline.set_progress_bar_config(disable=True)
    dtype = synth.pipeline.unet.dtype
    images = []
    for name in active:
        values = controls[name][batch].to(synth.device, dtype)
        if tuple(values.shape[-2:]) != tuple(size):
            mode = 'nearest' if name == 'seg' else 'bilinear'
            values = F.interpolate(values, size=size, mode=mode)
        images.append(values)
    return pipeline, {
        'image': images,
        'controlnet_conditioning_scale': [scales[name] for name in active],
    }
