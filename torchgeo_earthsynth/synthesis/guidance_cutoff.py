# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Classifier-free guidance for the first steps only: a diffusers step-end callback.

Late denoising steps mostly add detail the guidance barely changes, so stopping the
unconditional pass after the first ``k`` steps saves nearly half of every later step.
diffusers' own ``SDCFGCutoffCallback`` keeps only ``prompt_embeds[-1:]`` (one sample) and
leaves the ControlNet's doubled condition image as it is; this one keeps the whole
conditional half of both, so it works for batches and for ControlNet pipelines.
"""

from __future__ import annotations

from typing import Any

from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline
from torch import Tensor


class GuidanceCutoff:
    """``callback_on_step_end`` that drops the unconditional half after ``steps`` steps.

    After step ``steps - 1`` it sets the pipeline's guidance scale to 1 (no guidance) and
    keeps the conditional half of ``prompt_embeds`` and, for a ControlNet pipeline, of the
    condition ``image``; every later step runs the UNet (and ControlNet) on the batch once.

    Args:
        steps: denoising steps run with guidance (>= 1).

    Raises:
        ValueError: if ``steps`` is below 1.

    .. versionadded:: 0.2
    """

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f'guidance steps must be >= 1, got {steps}')
        self.steps = steps

    @staticmethod
    def tensor_inputs(
        pipeline: StableDiffusionControlNetPipeline | StableDiffusionPipeline,
    ) -> list[str]:
        """The pipeline tensors the callback edits: its ``callback_on_step_end_tensor_inputs``."""
        controlnet = isinstance(pipeline, StableDiffusionControlNetPipeline)
        return ['prompt_embeds', 'image'] if controlnet else ['prompt_embeds']

    @staticmethod
    def supported(pipeline: StableDiffusionControlNetPipeline | StableDiffusionPipeline) -> bool:
        """Whether this diffusers lets the step callback edit every tensor the cutoff needs."""
        inputs = GuidanceCutoff.tensor_inputs(pipeline)
        return set(inputs) <= set(pipeline._callback_tensor_inputs)

    def __call__(
        self,
        pipeline: StableDiffusionControlNetPipeline | StableDiffusionPipeline,
        step_index: int,
        timestep: Any,
        callback_kwargs: dict[str, Tensor],
    ) -> dict[str, Tensor]:
        """Cut the unconditional half once step ``steps - 1`` has run.

        Args:
            pipeline: the pipeline being run.
            step_index: index of the step that has just run.
            timestep: its timestep (unused).
            callback_kwargs: the tensors named by :meth:`tensor_inputs`.

        Returns:
            The tensors, halved to their conditional part at the cutoff step.
        """
        if step_index != self.steps - 1 or not pipeline.do_classifier_free_guidance:
            return callback_kwargs
        pipeline._guidance_scale = 1.0
        # The pipeline stacks [unconditional, conditional]: keep the conditional half.
        return {name: value.chunk(2)[1] for name, value in callback_kwargs.items()}


def cutoff_call(
    pipeline: StableDiffusionControlNetPipeline | StableDiffusionPipeline,
    guidance_steps: int | None,
    num_inference_steps: int,
    guided: bool,
    stacked_extras: bool,
) -> dict[str, Any]:
    """The pipeline call's callback arguments for guidance in the first steps only.

    Args:
        pipeline: the pipeline to be called.
        guidance_steps: steps run with guidance (None: all).
        num_inference_steps: the denoising steps of the call.
        guided: whether the call uses classifier-free guidance at all.
        stacked_extras: whether the call passes per-sample inputs stacked for guidance
            beyond the prompt and a ControlNet image (metadata, levels, named controls,
            inpainting), which the cutoff cannot halve.

    Returns:
        ``callback_on_step_end`` and its tensor inputs; empty if guidance runs every step.

    Raises:
        ValueError: if the cutoff applies and the call has stacked extras.
    """
    if not guided or guidance_steps is None or guidance_steps >= num_inference_steps:
        return {}
    inputs = GuidanceCutoff.tensor_inputs(pipeline)
    if not GuidanceCutoff.supported(pipeline):
        raise ValueError(
            f'guidance_steps needs a pipeline whose step callback may edit {inputs}; this '
            f'diffusers allows {pipeline._callback_tensor_inputs} (upgrade diffusers)'
        )
    if stacked_extras:
        raise ValueError(
            'guidance_steps below num_inference_steps is supported for prompts and masks '
            'only (no metadata, resolution levels, named controls or inpainting)'
        )
    return {
        'callback_on_step_end': GuidanceCutoff(guidance_steps),
        'callback_on_step_end_tensor_inputs': inputs,
    }


__all__ = ('GuidanceCutoff', 'cutoff_call')
