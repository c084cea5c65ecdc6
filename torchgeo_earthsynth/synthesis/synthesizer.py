# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Batched conditions -> image synthesis: one sampling core for every generator family.

The core knows no family by name: each family (:mod:`torchgeo_earthsynth.families`)
declares the conditions it needs and accepts and adds its inputs to every call. Its parts
live next to it: which pipeline a checkpoint is (:mod:`.loading`), schedulers and source
checks (:mod:`.parts`), guidance for the first steps only (:mod:`.guidance_cutoff`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import (
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)
from torch import Tensor

from torchgeo_earthsynth.conditions import ConditionEncoding
from torchgeo_earthsynth.encodings.bands import SpectralBands
from torchgeo_earthsynth.families import (
    BatchCall,
    GeneratorFamily,
    bind_families,
    check_conditions,
)
from torchgeo_earthsynth.models import EARTHSYNTH_ID, PromptEncoder, vae_bands
from torchgeo_earthsynth.synthesis.guidance_cutoff import cutoff_call
from torchgeo_earthsynth.synthesis.loading import pretrained_pipeline, tiny_pipeline
from torchgeo_earthsynth.synthesis.parts import SCHEDULERS, Family, SchedulerName
from torchgeo_earthsynth.vocabulary import multi_hot


def _checked_seeds(
    families: Sequence[GeneratorFamily],
    request: Mapping[str, Any],
    seeds: Sequence[int] | Tensor | None,
) -> list[int]:
    """Check a request against its families; its seeds (default ``0..B-1``)."""
    check_conditions(families, request)
    count = len(request['prompt'])
    for family in families:
        family.check(request, count)
    seeds = list(range(count)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != count:
        what = 'masks' if 'mask' in request else 'prompts'
        raise ValueError(f'{count} {what} but {len(seeds)} seeds')
    return seeds


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
                (its 9-channel inpainting UNet), ``multicontrol`` (one ControlNet per
                control of :data:`~torchgeo_earthsynth.controls.CONTROL_NAMES`) or
                ``multispectral`` (a mask ControlNet over a 13-band Sentinel-2 VAE).
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
    def families(self) -> list[GeneratorFamily]:
        """The families serving the pipeline as it is now (adapters may be loaded later)."""
        return bind_families(self.pipeline, {'condition_encoding': self.condition_encoding})

    @property
    def needs(self) -> frozenset[str]:
        """The request keys generation needs (DESIGN.md "Conditions"), by the families."""
        return frozenset(key for family in self.families for key in family.needs)

    @property
    def accepts(self) -> frozenset[str]:
        """The request keys this synthesizer takes (``prompt`` always)."""
        families = self.families  # bound once: every family's needed and accepted keys
        keys = {'prompt'}.union(*(family.needs for family in families))
        return frozenset(keys.union(*(family.accepts for family in families)))

    def takes(self, key: str) -> bool:
        """Whether a request may hold ``key`` (``mask``, ``metadata``, ``low_res``, ...)."""
        return key in self.accepts

    @property
    def bands(self) -> SpectralBands:
        """The bands generated images hold and what their 0..255 mean (8-bit RGB by default).

        A multispectral generator's are its VAE's (``band_names`` etc. in ``vae/config.json``):
        ``synth.bands.to_physical(images)`` gives reflectance or digital numbers per band.
        """
        return vae_bands(self.pipeline.vae)

    # ------------------------------------------------------------------ generation
    @property
    def device(self) -> torch.device:
        """The device the pipeline runs on."""
        device: torch.device = self.pipeline.unet.device
        return device

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
        inpaint_seam: int | None = None,
        controls: Mapping[str, Tensor] | None = None,
        control_scales: Mapping[str, float] | None = None,
        reference: Tensor | None = None,
        reference_scale: float | None = None,
    ) -> Tensor:
        """Generate one image per request: :meth:`sample`'s request keys, as keywords.

        Each family documents what it takes (:mod:`torchgeo_earthsynth.families`); None
        leaves a condition out.

        Args:
            masks: ``mask``: int [B, H, W] vocabulary ids (None for a family without).
            prompts: ``prompt``: B prompts.
            seeds: B seeds (default ``0..B-1``); a sample depends only on its own.
            size: output (height, width), default the size the conditions imply.
            metadata: float32 [B, 7] in physical units, NaN where unknown.
            low_res: float [B, C, h, w] in [0, 1], for super-resolution.
            low_res_metadata: the low-res image's metadata (default: ``metadata``, 10 m).
            levels: Text2Earth's resolution level per sample (0 or 10..18).
            image: float [B, 3, H, W] 0..255, the scene to in- or outpaint.
            inpaint_mask: bool [B, H, W], True where to generate.
            inpaint_seam: pixels over which the region fades into the kept image (default
                4; 0 pastes it hard, so everything inside the region is generated).
            controls: ``{name: float [B, C, H, W] in [0, 1]}`` of a multi-condition model.
            control_scales: ``{name: scale}`` of the controls' residuals (default 1.0).
            reference: images [B, 3, H, W] 0..255 or CLIP image embeddings [B, D].
            reference_scale: the IP-Adapter's scale (default 1.0).

        Returns:
            float32 [B, C, H, W] images in 0..255 per band: C = 3 (RGB), or a multispectral
            generator's :attr:`bands`.

        Raises:
            ValueError: if a condition the family needs is missing, one it does not take is
                given, or the batch sizes, band count or image size do not fit.
        """
        request = {
            'mask': masks,
            'prompt': list(prompts),
            'metadata': metadata,
            'low_res': low_res,
            'low_res_metadata': low_res_metadata,
            'levels': levels,
            'image': image,
            'inpaint_mask': inpaint_mask,
            'inpaint_seam': inpaint_seam,
            'controls': controls,
            'control_scales': control_scales,
            'reference': reference,
            'reference_scale': reference_scale,
        }
        return self.sample(request, seeds, size)

    @torch.inference_mode()
    def sample(
        self,
        request: Mapping[str, Any],
        seeds: Sequence[int] | Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Generate one image per prompt of a request, a batch dict (DESIGN.md "Conditions").

        The sampling core: it checks the request against the families' declared
        conditions, then generates in batches, each sample from its own seed, prompts
        through the cache, with classifier-free guidance (and its cut-off); each family adds
        its inputs to every call (:class:`~torchgeo_earthsynth.families.GeneratorFamily`).

        Args:
            request: ``prompt`` (B prompts) and any conditions the families take (None: out).
            seeds: B seeds (default ``0..B-1``).
            size: output (height, width), default the size the conditions imply.

        Returns:
            float32 [B, C, H, W] images in 0..255 per band (C: :attr:`bands`) on the
            request's (``mask``, ``metadata``, ``image``) device, else the model's.

        Raises:
            ValueError: naming the condition that is missing, not taken or does not fit.
        """
        request = {key: value for key, value in request.items() if value is not None}
        families = self.families
        seeds = _checked_seeds(families, request, seeds)
        count = len(seeds)
        size = self._size(families, request, size)
        prepared = {k: v for family in families for k, v in family.prepare(request, count).items()}
        guided = self.guidance_scale > 1
        stacked = any(family.stacks_inputs(request) for family in families)
        steps = self.num_inference_steps
        cutoff = cutoff_call(self.pipeline, self.guidance_steps, steps, guided, stacked)
        # The negative prompt is one embedding for every sample: encode it once per call.
        negative = self.prompts([self.negative_prompt]) if guided else None
        out = []
        for start in range(0, count, self.batch_size):
            batch = slice(start, start + self.batch_size)
            embeds = self.prompts(request['prompt'][batch])
            # One CPU generator per sample: a sample depends on its seed only.
            latents = torch.stack(
                [
                    torch.randn(
                        self._latent_shape(*size), generator=torch.Generator().manual_seed(s)
                    )
                    for s in seeds[batch]
                ]
            ).to(self.device, embeds.dtype)
            call = BatchCall(
                request, prepared, batch, seeds[batch], size, guided, embeds.dtype, self.pipeline
            )
            with call.stack:
                for family in families:
                    family.contribute(call)
                images = (
                    call.pipeline(
                        prompt_embeds=embeds,
                        negative_prompt_embeds=None
                        if negative is None
                        else negative.expand_as(embeds),
                        height=size[0],
                        width=size[1],
                        num_inference_steps=steps,
                        guidance_scale=self.guidance_scale,
                        latents=latents,
                        output_type='pt',
                        **call.kwargs,
                        **cutoff,
                    )
                    .images.float()
                    .mul(255)
                )
            for family in families:
                images = family.finish(call, images)
            out.append(images)
        tensors = (request.get(key) for key in ('mask', 'metadata', 'image'))
        device = next((t.device for t in tensors if isinstance(t, Tensor)), self.device)
        return torch.cat(out).to(device)

    def _size(
        self,
        families: Sequence[GeneratorFamily],
        request: Mapping[str, Any],
        size: tuple[int, int] | None,
    ) -> tuple[int, int]:
        """The output size: ``size``, the conditions', ``default_size``, else the UNet's."""
        implied = (family.default_size(request) for family in families)
        size = size or next((s for s in implied if s is not None), None) or self.default_size
        factor = self.pipeline.vae_scale_factor
        if size is None:
            side = int(self.pipeline.unet.config.sample_size) * factor
            size = (side, side)
        height, width = size
        if height % factor or width % factor:
            raise ValueError(
                f'image size {height}x{width} must be a multiple of the VAE downscale factor '
                f'{factor}'
            )
        for family in families:
            family.check_size(request, (height, width))
        return height, width

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
            Sample dicts: ``image`` float32 [C, H, W] 0..255 (:attr:`bands`), ``prompt``,
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


__all__ = ('Synthesizer',)
