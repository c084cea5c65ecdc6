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
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from torchgeo_earthsynth.controls import CONTROLS, ControlExtractor
from torchgeo_earthsynth.families.base import BatchCall, GeneratorFamily, register
from torchgeo_earthsynth.families.pipelines import build_pipeline, build_text_pipeline
from torchgeo_earthsynth.models import NamedMultiControlNet


def multicontrol_of(pipeline: Any) -> NamedMultiControlNet | None:
    """The pipeline's named multi-condition ControlNet, if it has one."""
    controlnet = getattr(pipeline, 'controlnet', None)
    return controlnet if isinstance(controlnet, NamedMultiControlNet) else None


def controls_from_masks(pipeline: Any, masks: Tensor) -> dict[str, Tensor]:
    """The maps of a pipeline's model that class masks give (``seg``, ``road``).

    Args:
        pipeline: a synthesizer's pipeline.
        masks: int [B, H, W] vocabulary ids.

    Returns:
        ``{name: float [B, C, H, W]}`` for each of the model's controls made from a mask
        (none for a model that takes no controls).
    """
    model = multicontrol_of(pipeline)
    names = [
        name
        for name in (model.names if model is not None else ())
        if name in CONTROLS and CONTROLS[name].source == 'mask'
    ]
    controls: dict[str, Tensor] = ControlExtractor(names)({'mask': masks})
    return controls


def check_controls(
    model: NamedMultiControlNet,
    controls: Mapping[str, Tensor] | None,
    control_scales: Mapping[str, float] | None,
    count: int,
) -> None:
    """Refuse controls the model does not take or of the wrong shape.

    Raises:
        ValueError: naming the control, what was expected and the known controls.
    """
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
    parent: Any,
    controls: Mapping[str, Tensor] | None,
    control_scales: Mapping[str, float] | None,
    batch: slice,
    size: tuple[int, int],
) -> tuple[Any, dict[str, Any]]:
    """The pipeline to run for a batch and its control inputs.

    Args:
        parent: the synthesizer's pipeline (it holds a :class:`NamedMultiControlNet`).
        controls: ``{name: float [B, C, H, W] in [0, 1]}``, any subset of the model's.
        control_scales: ``{name: scale}``; a control not named here has scale 1.0.
        batch: the samples of this batch.
        size: the output (height, width); controls are resized to it (``seg`` NEAREST).

    Returns:
        A pipeline sharing the parent's modules (a ControlNet pipeline over the active
        controls, or a text pipeline when none is active) and its keyword inputs.
    """
    model = multicontrol_of(parent)
    assert model is not None
    scales = {name: float((control_scales or {}).get(name, 1.0)) for name in controls or {}}
    active = [name for name in model.names if scales.get(name, 0.0) != 0.0]
    if not active:
        pipeline = build_text_pipeline(parent)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline, {}
    assert controls is not None
    pipeline = build_pipeline(parent, model.subset(active))
    pipeline.set_progress_bar_config(disable=True)
    dtype, device = parent.unet.dtype, parent.unet.device
    images = []
    for name in active:
        values = controls[name][batch].to(device, dtype)
        if tuple(values.shape[-2:]) != tuple(size):
            mode = 'nearest' if name == 'seg' else 'bilinear'
            values = F.interpolate(values, size=size, mode=mode)
        images.append(values)
    return pipeline, {
        'image': images,
        'controlnet_conditioning_scale': [scales[name] for name in active],
    }


@register
class MultiControlFamily(GeneratorFamily):
    """CRS-Diff's multi-condition: one ControlNet per named control map (``controls``).

    Any subset of the model's controls steers a call (a control left out is skipped, not
    zero-filled); ``control_scales`` scales their residuals (0: left out).
    """

    title = 'a multi-condition ControlNet (controls=)'

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.accepts = frozenset({'controls', 'control_scales'})

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """A pipeline over a :class:`~torchgeo_earthsynth.models.NamedMultiControlNet`."""
        return multicontrol_of(pipeline) is not None

    def check(self, request: Mapping[str, Any], count: int) -> None:
        """Known controls of the model's channel counts, one per prompt."""
        model = multicontrol_of(self.pipeline)
        assert model is not None
        check_controls(model, request.get('controls'), request.get('control_scales'), count)

    def default_size(self, request: Mapping[str, Any]) -> tuple[int, int] | None:
        """The first control's size."""
        return controls_size(request.get('controls'))

    def stacks_inputs(self, request: Mapping[str, Any]) -> bool:
        """Named controls are stacked under guidance."""
        return True

    def contribute(self, call: BatchCall) -> None:
        """The pipeline over the active controls, their images and scales."""
        controls, scales = call.request.get('controls'), call.request.get('control_scales')
        call.pipeline, inputs = controlled_pipeline(
            self.pipeline, controls, scales, call.batch, call.size
        )
        call.kwargs.update(inputs)


__all__ = (
    'MultiControlFamily',
    'check_controls',
    'controlled_pipeline',
    'controls_from_masks',
    'controls_size',
    'multicontrol_of',
)
