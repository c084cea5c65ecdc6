# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionSat's super-resolution ControlNet: the low-res condition, its size, our exports."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torchgeo_earthsynth.families.base import BatchCall, GeneratorFamily, register
from torchgeo_earthsynth.families.pipelines import build_pipeline
from torchgeo_earthsynth.models import (
    DiffusionSatControlNet,
    LowResControlNetPipeline,
    load_diffusionsat_controlnet,
    pretrained_parts,
)


def condition_size(
    controlnet: DiffusionSatControlNet, vae_scale_factor: int, height: int, width: int
) -> tuple[int, int]:
    """The size a super-resolution ControlNet takes its low-res condition at, for an output size.

    Our super-resolution ControlNets take it at the output size; DiffusionSat's released one
    at half of it (``conditioning_scale`` 2): latent size times the condition embedding's
    downsampling.

    Args:
        controlnet: the ControlNet.
        vae_scale_factor: the VAE's downscale factor (8 for SD, 2 for the tiny preset).
        height: output height.
        width: output width.

    Returns:
        The condition's (height, width).
    """
    downsample = controlnet.condition_downsample
    return height // vae_scale_factor * downsample, width // vae_scale_factor * downsample


@register
class SuperResolutionFamily(GeneratorFamily):
    """A super-resolution ControlNet: ``low_res`` float [B, C, h, w] in [0, 1] as its condition.

    C is the ControlNet's ``conditioning_in_channels`` (their fMoW checkpoint: 10
    Sentinel-2 bands), h x w the size it takes the condition at (:func:`condition_size`);
    the output defaults to the size that condition implies.
    """

    title = 'a super-resolution ControlNet'

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.needs = frozenset({'low_res'})
        self.accepts = frozenset({'low_res', 'low_res_metadata'})

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """A :class:`~torchgeo_earthsynth.models.LowResControlNetPipeline`."""
        return isinstance(pipeline, LowResControlNetPipeline)

    def check(self, request: Mapping[str, Any], count: int) -> None:
        """The band count and one low-res image per prompt."""
        low_res = request['low_res']
        channels = self.pipeline.controlnet.config.conditioning_in_channels
        if low_res.dim() != 4 or low_res.shape[1] != channels or len(low_res) != count:
            raise ValueError(
                f'low_res: expected [{count}, {channels}, h, w] for {count} '
                f'prompts (the ControlNet takes {channels} bands), got {list(low_res.shape)}'
            )

    def default_size(self, request: Mapping[str, Any]) -> tuple[int, int] | None:
        """The output size whose condition the low-res image is."""
        factor = self.pipeline.vae_scale_factor
        downsample = self.pipeline.controlnet.condition_downsample
        height, width = (int(side) // downsample * factor for side in request['low_res'].shape[-2:])
        return height, width

    def check_size(self, request: Mapping[str, Any], size: tuple[int, int]) -> None:
        """The low-res image is at the size the ControlNet takes for ``size``."""
        controlnet, factor = self.pipeline.controlnet, self.pipeline.vae_scale_factor
        expected = list(condition_size(controlnet, factor, *size))
        if list(request['low_res'].shape[-2:]) != expected:
            raise ValueError(
                f'low_res: {list(request["low_res"].shape[-2:])} px does not fit a '
                f'{size[0]}x{size[1]} output (this ControlNet takes it at {expected} px)'
            )

    def contribute(self, call: BatchCall) -> None:
        """The batch's low-res images as the ControlNet's condition."""
        call.kwargs['image'] = call.chunk(call.request['low_res'])


def is_super_resolution_export(folder: str | Path) -> bool:
    """Whether ``folder`` is a full pipeline export of ``SuperResolutionTask``."""
    path = Path(folder)
    index = path / 'model_index.json'
    return index.is_file() and 'LowResControlNetPipeline' in index.read_text()


def low_res_pipeline(folder: str | Path) -> LowResControlNetPipeline:
    """Load a ``SuperResolutionTask`` full export as a ``LowResControlNetPipeline``.

    Args:
        folder: the export (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``,
            ``tokenizer/``, ``scheduler/``, ``controlnet/`` with DiffusionSat's config fields).

    Returns:
        The pipeline, its ControlNet loaded key for key.
    """
    parts = pretrained_parts(folder)
    controlnet = load_diffusionsat_controlnet(folder, 'controlnet')
    pipeline: LowResControlNetPipeline = build_pipeline(parts, controlnet, LowResControlNetPipeline)
    return pipeline


__all__ = (
    'SuperResolutionFamily',
    'condition_size',
    'is_super_resolution_export',
    'low_res_pipeline',
)
