# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionSat's temporal generation: earlier frames and their metadata -> the target date."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchgeo_earthsynth.conditions import NUM_METADATA
from torchgeo_earthsynth.families.base import BatchCall, GeneratorFamily, register
from torchgeo_earthsynth.families.pipelines import build_pipeline
from torchgeo_earthsynth.models import (
    TemporalControlNetPipeline,
    load_temporal_controlnet,
    normalize_metadata,
    pretrained_parts,
)


def normalize_frame_metadata(frame_metadata: torch.Tensor) -> torch.Tensor:
    """Physical-unit metadata of each frame ``[B, 7, T]`` -> DiffusionSat's normalised values."""
    per_frame = frame_metadata.float().movedim(2, 1)  # [B, T, 7]
    normalised = normalize_metadata(per_frame.flatten(0, 1)).view(per_frame.shape)
    return normalised.movedim(1, 2)


@register
class TemporalFamily(GeneratorFamily):
    """A temporal ControlNet: ``frames`` float [B, C, T, H, W] in [0, 1], earlier images.

    ``frame_metadata`` [B, 7, T] (physical units, NaN where unknown; absent: all unknown)
    gives each frame's place, resolution and date; the request's ``metadata`` is the target's
    (the date to generate). The output defaults to the frames' size.
    """

    title = 'a temporal ControlNet'

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.needs = frozenset({'frames'})
        self.accepts = frozenset({'frames', 'frame_metadata'})

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """A :class:`~torchgeo_earthsynth.models.TemporalControlNetPipeline`."""
        return isinstance(pipeline, TemporalControlNetPipeline)

    def check(self, request: Mapping[str, Any], count: int) -> None:
        """The frames' band count, one sequence per prompt, metadata for each frame."""
        frames = request['frames']
        channels = self.pipeline.controlnet.config.conditioning_in_channels
        if frames.dim() != 5 or frames.shape[1] != channels or len(frames) != count:
            raise ValueError(
                f'frames: expected [{count}, {channels}, frames, h, w] for {count} prompts '
                f'(the ControlNet takes {channels} bands a frame), got {list(frames.shape)}'
            )
        metadata = request.get('frame_metadata')
        expected = [count, NUM_METADATA, int(frames.shape[2])]
        if metadata is not None and list(metadata.shape) != expected:
            raise ValueError(
                f'frame_metadata: expected {expected} (7 fields for each of the '
                f'{frames.shape[2]} frames), got {list(metadata.shape)}'
            )

    def default_size(self, request: Mapping[str, Any]) -> tuple[int, int] | None:
        """The frames' size."""
        height, width = (int(side) for side in request['frames'].shape[-2:])
        return height, width

    def check_size(self, request: Mapping[str, Any], size: tuple[int, int]) -> None:
        """The frames are at the output size (their ControlNet takes them so)."""
        if tuple(request['frames'].shape[-2:]) != tuple(size):
            raise ValueError(
                f'frames: {list(request["frames"].shape[-2:])} px does not fit a '
                f'{size[0]}x{size[1]} output (the frames are taken at the output size)'
            )

    def prepare(self, request: Mapping[str, Any], count: int) -> dict[str, Any]:
        """Each frame's normalised metadata, the condition's metadata of the ControlNet."""
        frame_metadata = request.get('frame_metadata')
        if frame_metadata is None:
            frames = int(request['frames'].shape[2])
            frame_metadata = torch.full((count, NUM_METADATA, frames), float('nan'))
        return {'condition_metadata': normalize_frame_metadata(frame_metadata)}

    def contribute(self, call: BatchCall) -> None:
        """The batch's frames as the ControlNet's condition."""
        call.kwargs['image'] = call.chunk(call.request['frames'])


def is_temporal_export(folder: str | Path) -> bool:
    """Whether ``folder`` is a full pipeline export of ``TemporalControlNetTask``."""
    index = Path(folder) / 'model_index.json'
    return index.is_file() and 'TemporalControlNetPipeline' in index.read_text()


def temporal_pipeline(folder: str | Path) -> TemporalControlNetPipeline:
    """Load a ``TemporalControlNetTask`` full export as a ``TemporalControlNetPipeline``.

    Args:
        folder: the export (``model_index.json``, the SD parts, ``controlnet/`` in
            DiffusionSat's temporal layout).

    Returns:
        The pipeline, its ControlNet loaded key for key.
    """
    controlnet = load_temporal_controlnet(folder, 'controlnet')
    pipeline: TemporalControlNetPipeline = build_pipeline(
        pretrained_parts(folder), controlnet, TemporalControlNetPipeline
    )
    return pipeline


__all__ = ('TemporalFamily', 'is_temporal_export', 'normalize_frame_metadata', 'temporal_pipeline')
