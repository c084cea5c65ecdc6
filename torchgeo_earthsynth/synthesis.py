# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Batched conditions -> image synthesis: one sampling core for every generator family."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final

import torch
from diffusers import (
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)
from torch import Tensor

from .conditions import METADATA_FIELDS, NUM_METADATA, check_metadata
from .models import (
    EARTHSYNTH_ID,
    EARTHSYNTH_SUBFOLDER,
    SD15_ID,
    DiffusionSatControlNet,
    DiffusionSatUNet,
    LowResControlNetPipeline,
    PromptEncoder,
    controlnet_metadata,
    diffusionsat_parts,
    find_diffusionsat_controlnet,
    find_diffusionsat_unet,
    load_controlnet,
    load_diffusionsat_controlnet,
    normalize_metadata,
    pretrained_parts,
    tiny_controlnet,
    tiny_diffusionsat_controlnet,
    tiny_diffusionsat_parts,
    tiny_parts,
)
from .synthesis_parts import (
    SCHEDULERS,
    ConditionEncoding,
    Family,
    SchedulerName,
    _check_exists,
    _raise_if_unreachable,
    build_pipeline,
    build_text_pipeline,
    check_compatible,
    encode_condition,
)
from .vocabulary import multi_hot

#: Sentinel-2's GSD, the low-res metadata of their fMoW super-resolution training.
_LOW_RES_GSD: Final = 10.0


def _super_resolution_parts(
    folder: Path, base: str | Path | None
) -> tuple[Any, DiffusionSatControlNet, type[LowResControlNetPipeline]]:
    """Their super-resolution ControlNet and the DiffusionSat checkpoint it steers."""
    if base is None:
        raise ValueError(
            f'{folder}: a DiffusionSat super-resolution ControlNet needs base= the DiffusionSat '
            'checkpoint folder it was trained on (finetune_sd21_sn-satlas-fmow_snr5_md7norm_bs64)'
        )
    _check_exists(base, 'DiffusionSat checkpoint')
    unet_folder = find_diffusionsat_unet(base)
    if unet_folder is None:
        raise ValueError(
            f'{base}: no DiffusionSat UNet (use_metadata/num_metadata) for the super-resolution '
            f'ControlNet {folder}'
        )
    parts = diffusionsat_parts(base, unet_folder)
    controlnet = load_diffusionsat_controlnet(folder)
    check_compatible(controlnet, parts.unet, parts.text_encoder, str(folder), str(base))
    return parts, controlnet, LowResControlNetPipeline


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

    Raises:
        ValueError: on an unknown scheduler name or a step count/batch size below 1.

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
    ) -> None:
        if scheduler not in SCHEDULERS:
            raise ValueError(f'scheduler must be one of {sorted(SCHEDULERS)}, got {scheduler!r}')
        if num_inference_steps < 1 or batch_size < 1:
            raise ValueError(
                'num_inference_steps and batch_size must be >= 1, got '
                f'{num_inference_steps} and {batch_size}'
            )
        pipeline.scheduler = SCHEDULERS[scheduler].from_config(pipeline.scheduler.config)
        if device is not None or dtype is not None:
            pipeline = pipeline.to(device=device, dtype=dtype)
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline = pipeline
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        self.batch_size = batch_size
        self.condition_encoding: ConditionEncoding = condition_encoding
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
        **kwargs: Any,
    ) -> Synthesizer:
        """Load from our export, the released EarthSynth weights, any ControlNet, or DiffusionSat.

        The family is detected from the folder: a ControlNet config with DiffusionSat's
        ``conditioning_in_channels`` (in the folder, ``controlnet/`` or ``checkpoint-N/
        controlnet``) is their super-resolution ControlNet (``base``: the DiffusionSat
        checkpoint it was trained on); a UNet config with ``use_metadata``/``num_metadata``
        (in the folder, ``unet/`` or their release's ``checkpoint-N/unet``) is DiffusionSat;
        anything else is a ControlNet.

        Args:
            controlnet: a full pipeline export of ours (folder with ``model_index.json``), a
                ControlNet (hub id such as ``jaychempan/EarthSynth`` or a folder; a folder
                holding only ``controlnet/`` is read from there), or a DiffusionSat folder.
            base: the Stable Diffusion base for a bare ControlNet or a bare DiffusionSat UNet
                (hub id or folder; default SD 1.5, SD 2.1 for DiffusionSat); for their
                super-resolution ControlNet, the DiffusionSat checkpoint folder (required).
            subfolder: the ControlNet's subfolder (``controlnet`` for the released weights;
                chosen automatically for ``jaychempan/EarthSynth``).
            **kwargs: passed to :class:`Synthesizer`.

        Returns:
            The synthesizer.

        Raises:
            FileNotFoundError: if a local path does not exist.
            ValueError: if a folder holds neither a pipeline nor a ControlNet, if loading
                fails, or if the ControlNet does not fit the base.
        """
        path = Path(controlnet)
        _check_exists(controlnet, 'ControlNet checkpoint')
        sr_folder = find_diffusionsat_controlnet(path) if path.is_dir() else None
        if sr_folder is not None:
            return cls(build_pipeline(*_super_resolution_parts(sr_folder, base)), **kwargs)
        unet_folder = find_diffusionsat_unet(path) if path.is_dir() else None
        if unet_folder is not None:
            if base is not None:
                _check_exists(base, 'Stable Diffusion base')
            return cls(build_text_pipeline(diffusionsat_parts(path, unet_folder, base)), **kwargs)
        base = SD15_ID if base is None else base
        if (path / 'model_index.json').exists():
            try:
                # part by part: the ControlNet's class may be ours (a mask ControlNet + metadata)
                controlnet_model = load_controlnet(path, EARTHSYNTH_SUBFOLDER)
                pipeline = build_pipeline(pretrained_parts(path), controlnet_model)
            except (OSError, ValueError, KeyError) as error:
                message = f'{path}: cannot load the ControlNet pipeline ({error})'
                raise ValueError(message) from error
            check_compatible(
                pipeline.controlnet, pipeline.unet, pipeline.text_encoder, str(path), str(path)
            )
            meta = path / 'earthsynth.json'
            if meta.exists() and 'condition_encoding' not in kwargs:
                kwargs['condition_encoding'] = json.loads(meta.read_text())['condition_encoding']
            return cls(pipeline, **kwargs)
        if subfolder is None and str(controlnet) == EARTHSYNTH_ID:
            subfolder = EARTHSYNTH_SUBFOLDER
        if subfolder is None and path.is_dir() and not (path / 'config.json').exists():
            if (path / EARTHSYNTH_SUBFOLDER / 'config.json').exists():  # our ControlNet-only export
                subfolder = EARTHSYNTH_SUBFOLDER
        _check_exists(base, 'Stable Diffusion base')
        try:
            model = load_controlnet(controlnet, subfolder)
        except (OSError, KeyError) as error:
            _raise_if_unreachable(controlnet, error)
            message = f'{controlnet}: cannot load a diffusers ControlNet ({error})'
            raise ValueError(message) from error
        try:
            parts = pretrained_parts(base)
        except (OSError, ValueError, KeyError) as error:
            _raise_if_unreachable(base, error)
            raise ValueError(
                f'{base}: cannot load the Stable Diffusion base (expected a diffusers '
                f'folder or hub id with unet/, vae/, text_encoder/, tokenizer/, '
                f'scheduler/): {error}'
            ) from error
        check_compatible(model, parts.unet, parts.text_encoder, str(controlnet), str(base))
        return cls(build_pipeline(parts, model), **kwargs)

    @classmethod
    def tiny(
        cls, seed: int = 0, image_size: int = 64, family: Family = 'earthsynth', **kwargs: Any
    ) -> Synthesizer:
        """An untrained tiny-preset synthesizer of a family (tests, benchmarks); guidance 3.0.

        Args:
            seed: initialisation seed of the tiny parts.
            image_size: pixel size the tiny parts are built for.
            family: ``earthsynth`` (mask ControlNet), ``diffusionsat`` (text + metadata) or
                ``diffusionsat_sr`` (text + metadata + a 10-band low-res image at half size).
            **kwargs: passed to :class:`Synthesizer` (``guidance_scale`` defaults to 3.0,
                the tiny preset's setting, not 7.5).

        Returns:
            The synthesizer.

        Raises:
            ValueError: for an unknown family.
        """
        kwargs.setdefault('guidance_scale', 3.0)
        match family:
            case 'earthsynth':
                parts = tiny_parts(seed, image_size)
                return cls(build_pipeline(parts, tiny_controlnet(parts.unet)), **kwargs)
            case 'diffusionsat':
                return cls(build_text_pipeline(tiny_diffusionsat_parts(seed, image_size)), **kwargs)
            case 'diffusionsat_sr':
                parts = tiny_diffusionsat_parts(seed, image_size)
                controlnet = tiny_diffusionsat_controlnet(parts.unet)
                return cls(build_pipeline(parts, controlnet, LowResControlNetPipeline), **kwargs)
            case _:
                raise ValueError(
                    "family must be 'earthsynth', 'diffusionsat' or 'diffusionsat_sr', got "
                    f'{family!r}'
                )

    @property
    def takes_low_res(self) -> bool:
        """Whether this family is conditioned on a low-res image (super-resolution)."""
        return isinstance(self.pipeline, LowResControlNetPipeline)

    @property
    def takes_masks(self) -> bool:
        """Whether this family is conditioned on masks (a mask ControlNet)."""
        controlnet = isinstance(self.pipeline, StableDiffusionControlNetPipeline)
        return controlnet and not self.takes_low_res

    @property
    def needs_metadata(self) -> bool:
        """Whether generation needs metadata (a DiffusionSat UNet)."""
        unet = self.pipeline.unet
        return isinstance(unet, DiffusionSatUNet) and unet.metadata_embedding is not None

    @property
    def takes_metadata(self) -> bool:
        """Whether this family is conditioned on metadata (its UNet or its ControlNet)."""
        return self.needs_metadata or self._metadata_controlnet is not None

    @property
    def _metadata_controlnet(self) -> DiffusionSatControlNet | None:
        controlnet = getattr(self.pipeline, 'controlnet', None)
        if not isinstance(controlnet, DiffusionSatControlNet):
            return None
        return controlnet if controlnet.metadata_embedding is not None else None

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
                ControlNet with metadata takes it optionally (absent: all unknown).
            low_res: float [B, C, h, w] in [0, 1], C the ControlNet's
                ``conditioning_in_channels`` (their fMoW checkpoint: 10 Sentinel-2 bands at
                256 px, see :func:`~torchgeo_earthsynth.models.sentinel2_low_res`), for
                super-resolution.
            low_res_metadata: float32 [B, 7], the low-res image's metadata (default:
                ``metadata`` with a 10 m GSD, as their fMoW super-resolution training).

        Returns:
            float32 [B, 3, H, W] images in 0..255 on the masks' (else the prompts'
            metadata's, else the model's) device.

        Raises:
            ValueError: if a condition the family needs is missing, one it does not take is
                given, or the batch sizes, band count or image size do not fit.
        """
        count = self._check_request(masks, prompts, metadata, low_res, low_res_metadata)
        seeds = list(range(count)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != count:
            what = 'masks' if masks is not None else 'prompts'
            raise ValueError(f'{count} {what} but {len(seeds)} seeds')
        height, width = size or self._default_size(masks, low_res)
        factor = self.pipeline.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(
                f'image size {height}x{width} must be a multiple of the VAE '
                f'downscale factor {factor}'
            )
        if low_res is not None:
            self._check_low_res_size(low_res, height, width)
        guided = self.guidance_scale > 1
        # The negative prompt is one embedding for every sample: encode it once per call.
        negative = self.prompts([self.negative_prompt]) if guided else None
        normalised, low_res_normalised = self._normalised_metadata(
            count, metadata, low_res, low_res_metadata
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
            controlnet = self._metadata_controlnet
            with (
                nullcontext()
                if controlnet is None
                else controlnet_metadata(controlnet, chunk_md, chunk_low_res_md)
            ):
                images = self.pipeline(
                    prompt_embeds=embeds,
                    negative_prompt_embeds=None if negative is None else negative.expand_as(embeds),
                    height=height,
                    width=width,
                    num_inference_steps=self.num_inference_steps,
                    guidance_scale=self.guidance_scale,
                    latents=latents,
                    output_type='pt',
                    **family_inputs,
                ).images
            out.append(images.float().mul(255))
        device = next((t.device for t in (masks, metadata) if t is not None), self.device)
        return torch.cat(out).to(device)

    def _normalised_metadata(
        self,
        count: int,
        metadata: Tensor | None,
        low_res: Tensor | None,
        low_res_metadata: Tensor | None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """The request's and its low-res image's metadata, normalised as the family was trained."""
        if not self.takes_metadata:
            return None, None
        if metadata is None:  # a mask ControlNet with metadata: all fields unknown
            metadata = torch.full((count, NUM_METADATA), math.nan)
        if low_res is None or self._metadata_controlnet is None:
            return normalize_metadata(metadata.float()), None
        if low_res_metadata is None:
            low_res_metadata = metadata.float().clone()
            low_res_metadata[:, METADATA_FIELDS.index('gsd')] = _LOW_RES_GSD
        return normalize_metadata(metadata.float()), normalize_metadata(low_res_metadata.float())

    def _check_request(
        self,
        masks: Tensor | None,
        prompts: Sequence[str],
        metadata: Tensor | None,
        low_res: Tensor | None = None,
        low_res_metadata: Tensor | None = None,
    ) -> int:
        """Refuse a request lacking a condition the family needs; return its batch size."""
        family = 'a mask ControlNet' if self.takes_masks else 'a text-to-image model'
        family = 'a super-resolution ControlNet' if self.takes_low_res else family
        if self.takes_masks and masks is None:
            raise ValueError(f'this synthesizer is {family}: generate needs masks [B, H, W]')
        if not self.takes_masks and masks is not None:
            raise ValueError(f'this synthesizer is {family}: it takes no masks (pass None)')
        if self.takes_low_res and low_res is None:
            raise ValueError(f'this synthesizer is {family}: generate needs low_res [B, C, h, w]')
        if not self.takes_low_res and (low_res is not None or low_res_metadata is not None):
            raise ValueError(f'this synthesizer is {family}: it takes no low_res (pass None)')
        if self.needs_metadata and metadata is None:
            raise ValueError(
                'this synthesizer is conditioned on metadata: generate needs metadata=[B, 7] '
                '(lon, lat, gsd, cloud_cover, year, month, day; NaN where unknown)'
            )
        if not self.takes_metadata and metadata is not None:
            raise ValueError('this synthesizer is not conditioned on metadata (pass None)')
        if masks is not None:
            if masks.dim() != 3:
                raise ValueError(f'expected masks [B, H, W], got shape {tuple(masks.shape)}')
            if len(prompts) != len(masks):
                raise ValueError(f'{len(masks)} masks but {len(prompts)} prompts')
        if low_res is not None:
            channels = self.pipeline.controlnet.config.conditioning_in_channels
            if low_res.dim() != 4 or low_res.shape[1] != channels or len(low_res) != len(prompts):
                raise ValueError(
                    f'low_res: expected [{len(prompts)}, {channels}, h, w] for {len(prompts)} '
                    f'prompts (the ControlNet takes {channels} bands), got {list(low_res.shape)}'
                )
        for values in (metadata, low_res_metadata):
            if values is not None:
                check_metadata(values, len(prompts))
        return len(prompts)

    def _check_low_res_size(self, low_res: Tensor, height: int, width: int) -> None:
        downsample = self.pipeline.controlnet.condition_downsample
        factor = self.pipeline.vae_scale_factor
        expected = [height // factor * downsample, width // factor * downsample]
        if list(low_res.shape[-2:]) != expected:
            raise ValueError(
                f'low_res: {list(low_res.shape[-2:])} px does not fit a {height}x{width} output '
                f'(this ControlNet takes it at {expected} px)'
            )

    def _default_size(self, masks: Tensor | None, low_res: Tensor | None = None) -> tuple[int, int]:
        if masks is not None:
            return int(masks.shape[-2]), int(masks.shape[-1])
        factor = self.pipeline.vae_scale_factor
        if low_res is not None:
            downsample = self.pipeline.controlnet.condition_downsample
            return tuple(int(side) // downsample * factor for side in low_res.shape[-2:])
        side = int(self.pipeline.unet.config.sample_size) * factor
        return side, side

    def _latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        factor = self.pipeline.vae_scale_factor
        return (self.pipeline.unet.config.in_channels, height // factor, width // factor)

    def synthesize(
        self,
        masks: Tensor | None,
        prompts: Sequence[str],
        seeds: Sequence[int] | Tensor | None = None,
        *,
        metadata: Tensor | None = None,
        low_res: Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """Generate sample dicts; with masks, the label is the condition mask.

        Returns:
            Sample dicts: ``image`` float32 [3, H, W] 0..255, ``prompt``,
            ``source='synthetic'``, ``seed``; with masks also ``mask`` int64 and
            ``categories``; with metadata also ``metadata`` float32 [7] (physical units).
        """
        seeds = list(range(len(prompts))) if seeds is None else [int(s) for s in seeds]
        images = self.generate(masks, prompts, seeds, metadata=metadata, low_res=low_res)
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
