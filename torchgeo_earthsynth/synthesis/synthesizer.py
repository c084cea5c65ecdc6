# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Batched conditions -> image synthesis: one sampling core for every generator family.

Its parts live next to it: which family a checkpoint is and its pipeline
(:mod:`.synthesis_loading`), what a request must hold for the family
(:mod:`.synthesis_requests`), and condition images, pipelines and source checks
(:mod:`.synthesis_parts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import (
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)
from torch import Tensor

from torchgeo_earthsynth.families.inpainting import (
    SEAM,
    check_inpainting,
    composite,
    inpainting_call,
)
from torchgeo_earthsynth.families.multicontrol import (
    check_controls,
    controlled_pipeline,
    controls_size,
    multicontrol_of,
)
from torchgeo_earthsynth.families.reference import reference_embeddings, takes_reference
from torchgeo_earthsynth.models import (
    EARTHSYNTH_ID,
    DiffusionSatControlNet,
    DiffusionSatUNet,
    LowResControlNetPipeline,
    PromptEncoder,
    controlnet_metadata,
    forward_kwargs,
    ip_adapter_scale,
    resolution_levels,
    takes_levels,
)
from torchgeo_earthsynth.synthesis.guidance_cutoff import cutoff_call
from torchgeo_earthsynth.synthesis.loading import pretrained_pipeline, tiny_pipeline
from torchgeo_earthsynth.synthesis.parts import (
    SCHEDULERS,
    ConditionEncoding,
    Family,
    SchedulerName,
    build_pipeline,
    build_text_pipeline,
    check_compatible,
    encode_condition,
)
from torchgeo_earthsynth.synthesis.requests import check_request, normalised_metadata, request_size
from torchgeo_earthsynth.vocabulary import multi_hot


def _stack_for_guidance(values: Tensor, guided: bool) -> Tensor:
    """``values`` as the pipeline's batch: [zeros (unconditional), values] when guided."""
    return torch.cat([torch.zeros_like(values), values]) if guided else values


class Synthesizer:
    """Batched, reproducible generation from a request's conditions (DESIGN.md "Conditions").

    Wraps a diffusers pipeline: a ``StableDiffusionControlNetPipeline`` (EarthSynth: mask +
    prompt) or a ``StableDiffusionPipeline`` over a :class:`DiffusionSatUNet` (DiffusionSat:
    prompt + metadata). Prompt embeddings come from a cache, samples are generated in
    batches, and each sample has its own seed, so a sample is reproducible on its own
    whatever batch it was generated in. Families only add their inputs.

    Args:
        pipeline: the ControlNet or text pipeline.
        scheduler: sampler for inference (UniPC by default).
        num_inference_steps: denoising steps.
        guidance_scale: classifier-free guidance scale (1 disables guidance). Default 7.5,
            the setting of upstream EarthSynth's ``test.py`` and of diffusers' pipeline, for
            real weights; :meth:`tiny` and the training task's samples default to 3.0.
        negative_prompt: prompt guided away from.
        batch_size: samples per forward pass.
        condition_encoding: how masks become condition images (``grey`` for EarthSynth).
        prompt_cache: cache prompt embeddings.
        device: where to run (default: the pipeline's device).
        dtype: weights dtype (e.g. ``torch.float16`` on GPU).
        prompt_encoder: share an existing prompt-embedding cache (its text encoder must be
            the pipeline's).
        default_size: output (height, width) when a request sets none (default: the
            UNet's ``sample_size``; Text2Earth's is 256 px).
        guidance_steps: run guidance for the first ``guidance_steps`` steps only, then one
            conditional pass per step (:class:`~torchgeo_earthsynth.synthesis.guidance_cutoff.
            GuidanceCutoff`; prompts and masks only). Default None: every step.

    Raises:
        ValueError: on an unknown scheduler name or a step count/batch size/guidance step
            count below 1.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        pipeline: StableDiffusionControlNetPipeline | StableDiffusionPipeline,
        scheduler: SchedulerName = 'unipc',
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        negative_prompt: str = '',
        batch_size: int = 8,
        condition_encoding: ConditionEncoding = 'grey',
        prompt_cache: bool = True,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        prompt_encoder: PromptEncoder | None = None,
        default_size: tuple[int, int] | None = None,
        guidance_steps: int | None = None,
    ) -> None:
        if scheduler not in SCHEDULERS:
            raise ValueError(f'scheduler must be one of {sorted(SCHEDULERS)}, got {scheduler!r}')
        if num_inference_steps < 1 or batch_size < 1:
            raise ValueError(
                'num_inference_steps and batch_size must be >= 1, got '
                f'{num_inference_steps} and {batch_size}'
            )
        if guidance_steps is not None and guidance_steps < 1:
            raise ValueError(f'guidance_steps must be >= 1 or None, got {guidance_steps}')
        pipeline.scheduler = SCHEDULERS[scheduler].from_config(pipeline.scheduler.config)
        if device is not None or dtype is not None:
            pipeline = pipeline.to(device=device, dtype=dtype)
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.guidance_steps = guidance_steps
        self.negative_prompt = negative_prompt
        self.batch_size = batch_size
        self.condition_encoding: ConditionEncoding = condition_encoding
        self.default_size = default_size
        self.prompts = prompt_encoder or PromptEncoder(
            pipeline.tokenizer, pipeline.text_encoder, prompt_cache
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        controlnet: str | Path = EARTHSYNTH_ID,
        base: str | Path | None = None,
        subfolder: str | None = None,
        *,
        family: Literal['text2earth'] | None = None,
        **kwargs: Any,
    ) -> Synthesizer:
        """Load our export, EarthSynth's weights, any ControlNet, DiffusionSat or Text2Earth.

        The family is detected from the folder: a pipeline folder whose UNet has a
        ``timestep`` class embedding is Text2Earth (``lcybuaa/Text2Earth`` and
        ``lcybuaa/Text2Earth-inpainting`` too; their README's sampling is the default:
        Euler, 50 steps, guidance 4.0, 256 px); a ControlNet config with DiffusionSat's
        ``conditioning_in_channels`` (in the folder, ``controlnet/`` or ``checkpoint-N/
        controlnet``) is their super-resolution ControlNet (``base``: the DiffusionSat
        checkpoint it was trained on); a UNet config with ``use_metadata``/``num_metadata``
        (in the folder, ``unet/`` or their release's ``checkpoint-N/unet``) is DiffusionSat;
        a ``multicontrol.json`` (in the folder or ``controlnet/``) is a multi-condition
        ControlNet (:class:`~torchgeo_earthsynth.models.NamedMultiControlNet`; base: ``base``,
        else the folder's own SD parts, else SD 1.5); anything else is a ControlNet.

        Args:
            controlnet: a full pipeline export of ours (folder with ``model_index.json``), a
                ControlNet (hub id such as ``jaychempan/EarthSynth`` or a folder; a folder
                holding only ``controlnet/`` is read from there), or a DiffusionSat folder.
            base: the Stable Diffusion base for a bare ControlNet or a bare DiffusionSat UNet
                (hub id or folder; default SD 1.5, SD 2.1 for DiffusionSat); for their
                super-resolution ControlNet, the DiffusionSat checkpoint folder (required).
            subfolder: the ControlNet's subfolder (``controlnet`` for the released weights;
                chosen automatically for ``jaychempan/EarthSynth``).
            family: ``text2earth`` to load a Text2Earth copy from another hub id.
            **kwargs: passed to :class:`Synthesizer`.

        Returns:
            The synthesizer.

        Raises:
            FileNotFoundError: if a local path does not exist.
            ValueError: if a folder holds neither a pipeline nor a ControlNet, if loading
                fails, if the ControlNet does not fit the base, for an unknown ``family``
                or for a ``base``/``subfolder`` with a (complete) Text2Earth folder.
        """
        pipeline, settings = pretrained_pipeline(controlnet, base, subfolder, family)
        return cls(pipeline, **{**settings, **kwargs})

    @classmethod
    def tiny(
        cls, seed: int = 0, image_size: int = 64, family: Family = 'earthsynth', **kwargs: Any
    ) -> Synthesizer:
        """An untrained tiny-preset synthesizer of a family (tests, benchmarks); guidance 3.0.

        Args:
            seed: initialisation seed of the tiny parts.
            image_size: pixel size the tiny parts are built for.
            family: ``earthsynth`` (mask ControlNet), ``diffusionsat`` (text + metadata),
                ``diffusionsat_sr`` (text + metadata + a 10-band low-res image at half size),
                ``text2earth`` (text + resolution level), ``text2earth_inpainting``
                (its 9-channel inpainting UNet) or ``multicontrol`` (one ControlNet per
                control of :data:`~torchgeo_earthsynth.controls.CONTROL_NAMES`).
            **kwargs: passed to :class:`Synthesizer` (``guidance_scale`` defaults to 3.0,
                the tiny preset's setting, not 7.5).

        Returns:
            The synthesizer.

        Raises:
            ValueError: for an unknown family.
        """
        kwargs.setdefault('guidance_scale', 3.0)
        return cls(tiny_pipeline(seed, image_size, family), **kwargs)

    @property
    def takes_low_res(self) -> bool:
        """Whether this family is conditioned on a low-res image (super-resolution)."""
        return isinstance(self.pipeline, LowResControlNetPipeline)

    @property
    def takes_masks(self) -> bool:
        """Whether this family is conditioned on masks (a mask ControlNet)."""
        controlnet = isinstance(self.pipeline, StableDiffusionControlNetPipeline)
        return controlnet and not self.takes_low_res and not self.takes_controls

    @property
    def takes_controls(self) -> bool:
        """Whether this family is conditioned on named control maps (multi-condition)."""
        return multicontrol_of(self.pipeline) is not None

    @property
    def takes_reference(self) -> bool:
        """Whether this model takes a reference image (global content: an IP-Adapter)."""
        return takes_reference(self)

    @property
    def needs_metadata(self) -> bool:
        """Whether generation needs metadata (a DiffusionSat UNet)."""
        unet = self.pipeline.unet
        return isinstance(unet, DiffusionSatUNet) and unet.metadata_embedding is not None

    @property
    def takes_metadata(self) -> bool:
        """Whether this family takes metadata (its UNet, its ControlNet, Text2Earth's GSD)."""
        return self.needs_metadata or bool(self._metadata_controlnets) or self.takes_levels

    @property
    def takes_levels(self) -> bool:
        """Whether this family takes a resolution level as ``class_labels`` (Text2Earth)."""
        return takes_levels(self.pipeline.unet)

    @property
    def inpaints_only(self) -> bool:
        """Whether the UNet is an inpainting one (9 channels: needs image and inpaint_mask)."""
        unet_channels = self.pipeline.unet.config.in_channels
        return bool(unet_channels != self.pipeline.vae.config.latent_channels)

    @property
    def _metadata_controlnets(self) -> list[DiffusionSatControlNet]:
        """The ControlNets that take metadata (the pipeline's, or a multi-condition model's)."""
        multi = multicontrol_of(self.pipeline)
        if multi is not None:
            return multi.metadata_nets()
        controlnet = getattr(self.pipeline, 'controlnet', None)
        if not isinstance(controlnet, DiffusionSatControlNet):
            return []
        return [controlnet] if controlnet.metadata_embedding is not None else []

    # ------------------------------------------------------------------ generation
    @property
    def device(self) -> torch.device:
        """The device the pipeline runs on."""
        device: torch.device = self.pipeline.unet.device
        return device

    @torch.inference_mode()
    def generate(
        self,
        masks: Tensor | None,
        prompts: Sequence[str],
        seeds: Sequence[int] | Tensor | None = None,
        size: tuple[int, int] | None = None,
        *,
        metadata: Tensor | None = None,
        low_res: Tensor | None = None,
        low_res_metadata: Tensor | None = None,
        levels: Sequence[int] | Tensor | None = None,
        image: Tensor | None = None,
        inpaint_mask: Tensor | None = None,
        controls: Mapping[str, Tensor] | None = None,
        control_scales: Mapping[str, float] | None = None,
        reference: Tensor | None = None,
        reference_scale: float = 1.0,
    ) -> Tensor:
        """Generate one image per request (mask, metadata and/or low-res image, and prompt).

        Args:
            masks: int [B, H, W] vocabulary ids, for a family conditioned on masks (None for
                one that takes none, e.g. DiffusionSat).
            prompts: B prompts.
            seeds: B seeds (default ``0..B-1``); a sample depends only on its own.
            size: output (height, width), default the masks' size, the size the low-res
                image is super-resolved to, or the UNet's.
            metadata: float32 [B, 7] in physical units, NaN where unknown
                (:data:`~torchgeo_earthsynth.conditions.METADATA_FIELDS`), for a family
                conditioned on metadata; normalised here as the family was trained. A mask
                ControlNet with metadata, and multi-condition ControlNets with metadata, take
                it optionally (absent: all unknown).
            low_res: float [B, C, h, w] in [0, 1], C the ControlNet's
                ``conditioning_in_channels`` (their fMoW checkpoint: 10 Sentinel-2 bands at
                256 px, see :func:`~torchgeo_earthsynth.models.sentinel2_low_res`), for
                super-resolution.
            low_res_metadata: float32 [B, 7], the low-res image's metadata (default:
                ``metadata`` with a 10 m GSD, as their fMoW super-resolution training).
            levels: Text2Earth's resolution level per sample: 0 (unknown) or 10..18
                (GSD = 2 ** (17 - level) m/px); else the nearest level to ``metadata``'s
                GSD; else 0. Prompts carry the caption alone.
            image: float [B, 3, H, W] 0..255, the scene to in- or outpaint (see
                :func:`~torchgeo_earthsynth.families.outpaint_canvas`).
            inpaint_mask: bool [B, H, W], True where to generate; every other pixel of
                ``image`` is returned bit for bit.
            controls: ``{name: float [B, C, H, W] in [0, 1]}``, any subset of a
                multi-condition model's controls (:mod:`~torchgeo_earthsynth.controls` makes
                them); a control left out is skipped, not zero-filled.
            control_scales: ``{name: scale}`` of the ControlNet residuals (default 1.0 each;
                0 is the same as leaving the control out).
            reference: the global content condition of a model with an IP-Adapter
                (:mod:`~torchgeo_earthsynth.models.global_content`): reference images float
                [B, 3, H, W] in 0..255 (encoded by the pipeline's CLIP ``image_encoder``) or
                their CLIP image embeddings [B, D]; None runs the model without it.
            reference_scale: the IP-Adapter's scale (0 is the same as no reference).

        Returns:
            float32 [B, 3, H, W] images in 0..255 on the masks' (else the prompts'
            metadata's, else the model's) device.

        Raises:
            ValueError: if a condition the family needs is missing, one it does not take is
                given, or the batch sizes, band count or image size do not fit.
        """
        count = check_request(self, masks, prompts, metadata, low_res, low_res_metadata, image)
        check_controls(self, controls, control_scales, count)
        references = reference_embeddings(self, reference, count)  # None: no IP-Adapter
        reference_scale = 0.0 if reference is None else reference_scale
        seeds = list(range(count)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != count:
            what = 'masks' if masks is not None else 'prompts'
            raise ValueError(f'{count} {what} but {len(seeds)} seeds')
        size = size or controls_size(controls)
        height, width = request_size(self, size, masks, low_res, image)
        check_inpainting(self.pipeline, image, inpaint_mask, count, (height, width))
        class_labels = self._levels(count, levels, metadata)
        guided = self.guidance_scale > 1
        stacked_extras = self.takes_metadata or self.takes_controls or image is not None
        cutoff = cutoff_call(
            self.pipeline, self.guidance_steps, self.num_inference_steps, guided, stacked_extras
        )
        # The negative prompt is one embedding for every sample: encode it once per call.
        negative = self.prompts([self.negative_prompt]) if guided else None
        normalised, low_res_normalised = normalised_metadata(
            self, count, metadata, low_res, low_res_metadata
        )
        out = []
        for start in range(0, count, self.batch_size):
            stop = start + self.batch_size
            embeds = self.prompts(list(prompts[start:stop]))
            # One CPU generator per sample: a sample depends on its seed only.
            latents = torch.stack(
                [
                    torch.randn(
                        self._latent_shape(height, width),
                        generator=torch.Generator().manual_seed(seed),
                    )
                    for seed in seeds[start:stop]
                ]
            ).to(self.device, embeds.dtype)
            family_inputs: dict[str, Any] = {}
            if masks is not None:
                chunk = masks[start:stop].to(self.device)
                cond = encode_condition(chunk, (height, width), self.condition_encoding)
                family_inputs['image'] = cond.to(embeds.dtype)
            if low_res is not None:
                family_inputs['image'] = low_res[start:stop].to(self.device, embeds.dtype)
            # The pipeline stacks [unconditional, conditional]; unconditional metadata is 0.
            chunk_md, chunk_low_res_md = (
                None
                if values is None
                else _stack_for_guidance(values[start:stop].to(self.device, embeds.dtype), guided)
                for values in (normalised, low_res_normalised)
            )
            if self.needs_metadata:  # pipelines hand cross_attention_kwargs to the UNet untouched
                family_inputs['cross_attention_kwargs'] = {'metadata': chunk_md}
            pipeline = self.pipeline
            if image is not None and inpaint_mask is not None:
                pipeline, family_inputs = inpainting_call(
                    pipeline,
                    family_inputs,
                    image[start:stop],
                    inpaint_mask[start:stop],
                    seeds[start:stop],
                    embeds.dtype,
                )
            if self.takes_controls:
                pipeline, control_inputs = controlled_pipeline(
                    self, controls, control_scales, slice(start, stop), (height, width)
                )
                family_inputs.update(control_inputs)
            with ExitStack() as stack:
                for controlnet in self._metadata_controlnets:
                    stack.enter_context(controlnet_metadata(controlnet, chunk_md, chunk_low_res_md))
                if class_labels is not None:
                    labels = class_labels[start:stop].to(self.device, torch.float32)
                    stack.enter_context(
                        forward_kwargs(
                            pipeline.unet, class_labels=_stack_for_guidance(labels, guided)
                        )
                    )
                if references is not None:  # one reference per sample: see synthesis_reference
                    chunk_ref = references[start:stop, None].to(self.device, embeds.dtype)
                    added = {'image_embeds': [_stack_for_guidance(chunk_ref, guided)]}
                    stack.enter_context(forward_kwargs(pipeline.unet, added_cond_kwargs=added))
                    stack.enter_context(ip_adapter_scale(pipeline.unet, reference_scale))
                images = pipeline(
                    prompt_embeds=embeds,
                    negative_prompt_embeds=None if negative is None else negative.expand_as(embeds),
                    height=height,
                    width=width,
                    num_inference_steps=self.num_inference_steps,
                    guidance_scale=self.guidance_scale,
                    latents=latents,
                    output_type='pt',
                    **family_inputs,
                    **cutoff,
                ).images
            images = images.float().mul(255)
            if image is not None and inpaint_mask is not None:
                images = composite(images, image[start:stop], inpaint_mask[start:stop], SEAM)
            out.append(images)
        device = next((t.device for t in (masks, metadata, image) if t is not None), self.device)
        return torch.cat(out).to(device)

    def _levels(
        self, count: int, levels: Sequence[int] | Tensor | None, metadata: Tensor | None
    ) -> Tensor | None:
        """Text2Earth's ``class_labels``: explicit levels, else from the GSD, else 0."""
        if not self.takes_levels:
            if levels is not None:
                raise ValueError('this synthesizer takes no resolution levels (pass None)')
            return None
        return resolution_levels(count, levels, metadata)

    def _latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        factor = self.pipeline.vae_scale_factor
        channels = self.pipeline.vae.config.latent_channels  # an inpainting UNet takes 9
        return (channels, height // factor, width // factor)

    def synthesize(
        self,
        masks: Tensor | None,
        prompts: Sequence[str],
        seeds: Sequence[int] | Tensor | None = None,
        *,
        metadata: Tensor | None = None,
        low_res: Tensor | None = None,
        levels: Sequence[int] | Tensor | None = None,
        image: Tensor | None = None,
        inpaint_mask: Tensor | None = None,
        controls: Mapping[str, Tensor] | None = None,
        reference: Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """Generate sample dicts; with masks, the label is the condition mask.

        Takes :meth:`generate`'s conditions.

        Returns:
            Sample dicts: ``image`` float32 [3, H, W] 0..255, ``prompt``,
            ``source='synthetic'``, ``seed``; with masks also ``mask`` int64 and
            ``categories``; with metadata also ``metadata`` float32 [7] (physical units).
        """
        seeds = list(range(len(prompts))) if seeds is None else [int(s) for s in seeds]
        images = self.generate(
            masks,
            prompts,
            seeds,
            metadata=metadata,
            low_res=low_res,
            levels=levels,
            image=image,
            inpaint_mask=inpaint_mask,
            controls=controls,
            reference=reference,
        )
        samples = []
        for i, (image, prompt, seed) in enumerate(zip(images, prompts, seeds)):
            sample: dict[str, Any] = {'image': image, 'prompt': prompt}
            if masks is not None:
                sample.update(mask=masks[i].long(), categories=multi_hot(masks[i]))
            if metadata is not None:
                sample['metadata'] = metadata[i].float()
            samples.append({**sample, 'source': 'synthetic', 'seed': seed})
        return samples


__all__ = (
    'ConditionEncoding',
    'Family',
    'SchedulerName',
    'Synthesizer',
    'build_pipeline',
    'build_text_pipeline',
    'check_compatible',
    'encode_condition',
)
