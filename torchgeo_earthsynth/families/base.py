# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The family plug-in protocol: what a family needs and accepts, and what it adds to a call.

A request is a TorchGeo-style batch dict (DESIGN.md "Conditions"). The sampling core
(:class:`~torchgeo_earthsynth.synthesis.Synthesizer`) binds every registered family that
recognises its pipeline, checks the request against their declared conditions, and per batch
lets each family add its inputs to the pipeline call: keyword arguments, context managers
(forward hooks that hand a UNet or ControlNet what diffusers' pipelines do not pass), or a
different pipeline over the same modules. The core knows no family by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Final

import torch
from torch import Tensor

#: The condition keys of a request (DESIGN.md "Conditions") and the settings that go with
#: them (``low_res_metadata``, ``control_scales``, ``reference_scale``, ``inpaint_seam``).
CONDITIONS: Final[tuple[str, ...]] = (
    'mask',
    'prompt',
    'metadata',
    'controls',
    'image',
    'inpaint_mask',
    'low_res',
    'levels',
    'reference',
)
SETTINGS: Final[tuple[str, ...]] = (
    'low_res_metadata',
    'control_scales',
    'reference_scale',
    'inpaint_seam',
)

#: How an error names a missing condition.
NEEDED: Final[dict[str, str]] = {
    'mask': 'masks [B, H, W]',
    'metadata': 'metadata=[B, 7] (lon, lat, gsd, cloud_cover, year, month, day; NaN where unknown)',
    'low_res': 'low_res [B, C, h, w]',
    'image': 'image [B, 3, H, W] and inpaint_mask [B, H, W]',
    'inpaint_mask': 'image [B, 3, H, W] and inpaint_mask [B, H, W]',
}
#: How an error names a condition the synthesizer does not take.
NOUNS: Final[dict[str, str]] = {'mask': 'masks', 'levels': 'resolution levels'}


def stack_for_guidance(values: Tensor, guided: bool) -> Tensor:
    """``values`` as the pipeline's batch: [zeros (unconditional), values] when guided."""
    return torch.cat([torch.zeros_like(values), values]) if guided else values


@dataclass
class BatchCall:
    """One pipeline call of a request's batch, which families fill in.

    Attributes:
        request: the whole request (condition keys; None values dropped).
        prepared: what the families' :meth:`GeneratorFamily.prepare` derived for the whole request.
        batch: the samples of this call.
        seeds: the seeds of this call's samples.
        size: output (height, width).
        guided: whether the call runs classifier-free guidance (inputs stacked
            [unconditional, conditional]).
        dtype: the prompt embeddings' dtype.
        pipeline: the pipeline to call (a family may swap it for one over the same modules).
        kwargs: the call's keyword inputs.
        stack: context managers active during the call.
    """

    request: Mapping[str, Any]
    prepared: Mapping[str, Any]
    batch: slice
    seeds: Sequence[int]
    size: tuple[int, int]
    guided: bool
    dtype: torch.dtype
    pipeline: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    @property
    def device(self) -> torch.device:
        """The device the pipeline runs on."""
        device: torch.device = self.pipeline.unet.device
        return device

    def chunk(self, values: Tensor) -> Tensor:
        """This call's rows of a per-sample tensor, on the pipeline's device and dtype."""
        return values[self.batch].to(self.device, self.dtype)


class GeneratorFamily:
    """A generator family's plug-in, bound to one pipeline.

    Subclasses declare ``needs`` and ``accepts`` (condition keys, set in ``__init__`` when
    they depend on the pipeline) and override the hooks they use; :func:`register` adds
    them to the families the core binds.

    Args:
        pipeline: the diffusers pipeline the family recognised.
        settings: the synthesizer's settings a family may read (``condition_encoding``).
    """

    #: How errors name a synthesizer of this family (None: the family only adds inputs).
    title: str | None = None

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        self.pipeline = pipeline
        self.settings = dict(settings or {})
        self.needs: frozenset[str] = frozenset()
        self.accepts: frozenset[str] = frozenset()

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        """Whether this family serves ``pipeline``."""
        raise NotImplementedError

    def check(self, request: Mapping[str, Any], count: int) -> None:
        """Refuse a request whose conditions do not fit (shapes, values), naming them."""

    def default_size(self, request: Mapping[str, Any]) -> tuple[int, int] | None:
        """The output size this family's conditions imply (None: no opinion)."""
        return None

    def check_size(self, request: Mapping[str, Any], size: tuple[int, int]) -> None:
        """Refuse an output size this family's conditions do not fit."""

    def prepare(self, request: Mapping[str, Any], count: int) -> dict[str, Any]:
        """What the family derives once per request (normalised metadata, embeddings)."""
        return {}

    def stacks_inputs(self, request: Mapping[str, Any]) -> bool:
        """Whether the call passes per-sample inputs stacked for guidance (no cut-off)."""
        return False

    def contribute(self, call: BatchCall) -> None:
        """Add this family's inputs to one batch's pipeline call."""

    def finish(self, call: BatchCall, images: Tensor) -> Tensor:
        """The batch's generated images, float [B, 3, H, W] 0..255, after this family."""
        return images


#: The registered families, in the order they add their inputs.
FAMILIES: list[type[GeneratorFamily]] = []


def register(family: type[GeneratorFamily]) -> type[GeneratorFamily]:
    """Register a family plug-in (a class decorator); a new family is one module and this.

    Args:
        family: the :class:`GeneratorFamily` subclass.

    Returns:
        ``family``, registered.
    """
    if family not in FAMILIES:
        FAMILIES.append(family)
    return family


def bind_families(
    pipeline: Any, settings: Mapping[str, Any] | None = None
) -> list[GeneratorFamily]:
    """Every registered family that recognises ``pipeline``, bound to it."""
    return [family(pipeline, settings) for family in FAMILIES if family.recognises(pipeline)]


def check_conditions(families: Sequence[GeneratorFamily], request: Mapping[str, Any]) -> None:
    """Refuse a request lacking a condition the families need, or holding one none accepts.

    Raises:
        ValueError: naming the condition and the synthesizer's family.
    """
    needs = {key for family in families for key in family.needs}
    accepts = {'prompt', *needs, *(key for family in families for key in family.accepts)}
    unknown = sorted(set(request) - {*CONDITIONS, *SETTINGS, *accepts})
    if unknown:
        raise ValueError(f'unknown request keys {unknown}; a request holds {list(CONDITIONS)}')
    if 'prompt' not in request:
        raise ValueError('a request needs prompt: B prompts (an empty string for none)')
    title = next((f.title for f in families if f.title), 'a text-to-image model')
    for key in sorted(needs - set(request)):
        raise ValueError(f'this synthesizer is {title}: generate needs {NEEDED.get(key, key)}')
    for key in sorted(set(request) - accepts):
        if key == 'metadata':
            raise ValueError('this synthesizer is not conditioned on metadata (pass None)')
        noun = NOUNS.get(key, key)
        raise ValueError(f'this synthesizer is {title}: it takes no {noun} (pass None)')


__all__ = (
    'CONDITIONS',
    'FAMILIES',
    'SETTINGS',
    'BatchCall',
    'GeneratorFamily',
    'bind_families',
    'check_conditions',
    'register',
    'stack_for_guidance',
)
