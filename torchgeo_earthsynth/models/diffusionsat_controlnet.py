# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionSat's ControlNet with metadata (super-resolution), also a metadata mask ControlNet."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final

import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from diffusers.configuration_utils import register_to_config
from diffusers.models.controlnets.controlnet import ControlNetOutput
from torch import Tensor, nn

from torchgeo_earthsynth.conditions import NUM_METADATA
from torchgeo_earthsynth.models.diffusionsat import (
    DiffusionSatUNet,
    embed_metadata,
    load_key_for_key,
    metadata_embedding_modules,
    with_config_fields,
    zero_output_layers,
)
from torchgeo_earthsynth.models.stable_diffusion import forward_kwargs

__all__ = (
    'SENTINEL2_LOW_RES_BANDS',
    'DiffusionSatControlNet',
    'LowResControlNetPipeline',
    'controlnet_metadata',
    'find_diffusionsat_controlnet',
    'find_temporal_controlnet',
    'is_diffusionsat_controlnet',
    'is_temporal_controlnet',
    'load_diffusionsat_controlnet',
    'sentinel2_low_res',
)

#: The 10 Sentinel-2 bands their fMoW super-resolution ControlNet takes, in its channel order
#: (their loader swaps B2/B4 to RGB order and drops B1, B9, B10 of the 13 L1C bands).
SENTINEL2_LOW_RES_BANDS: Final = ('B4', 'B3', 'B2', 'B5', 'B6', 'B7', 'B8', 'B8A', 'B11', 'B12')
_SENTINEL2_BANDS: Final = ('B1 B2 B3 B4 B5 B6 B7 B8 B8A B9 B10 B11 B12').split()
# Per-band mean and std of fMoW-Sentinel (13 L1C bands), as their SentinelNormalize uses them.
_SENTINEL2_MEAN: Final = tuple(
    float(value)
    for value in (
        '1370.19151926 1184.3824625 1120.77120066 1136.26026392 1263.73947144 1645.40315151 '
        '1846.87040806 1762.59530783 1972.62420416 582.72633433 14.77112979 1732.16362238 '
        '1247.91870117'
    ).split()
)
_SENTINEL2_STD: Final = tuple(
    float(value)
    for value in (
        '633.15169573 650.2842772 712.12507725 965.23119807 948.9819932 1108.06650639 '
        '1258.36394548 1233.1492281 1364.38688993 472.37967789 14.3114637 1310.36996126 '
        '1087.6020813'
    ).split()
)


def sentinel2_low_res(bands: Tensor) -> Tensor:
    """13 Sentinel-2 L1C bands -> the 10-channel [0, 1] condition of their SR ControlNet.

    As their fMoW super-resolution loader: each band's ``mean +- 2 std`` maps to 0..255
    (clipped, truncated to 8 bits), then /255, bands reordered to
    :data:`SENTINEL2_LOW_RES_BANDS`. Resize to the condition resolution (256 px for
    ``controlnet_sd21_md7norm_fmow_condres256``) yourself.

    Args:
        bands: [B, 13, h, w] digital numbers in band order B1..B8, B8A, B9..B12.

    Returns:
        float32 [B, 10, h, w] in [0, 1].

    Raises:
        ValueError: if there are not 13 bands.
    """
    if bands.ndim != 4 or bands.shape[1] != len(_SENTINEL2_BANDS):
        raise ValueError(
            f'low_res: expected [batch, 13, h, w] Sentinel-2 bands ({" ".join(_SENTINEL2_BANDS)}), '
            f'got {list(bands.shape)}'
        )
    mean = bands.new_tensor(_SENTINEL2_MEAN, dtype=torch.float32)[:, None, None]
    std = bands.new_tensor(_SENTINEL2_STD, dtype=torch.float32)[:, None, None]
    low, high = mean - 2 * std, mean + 2 * std
    scaled = ((bands.float() - low) / (high - low) * 255).clamp(0, 255).floor() / 255
    keep = [_SENTINEL2_BANDS.index(band) for band in SENTINEL2_LOW_RES_BANDS]
    return scaled[:, keep]


def _condition_strides(num_blocks: int, conditioning_scale: int) -> list[int]:
    """Their condition-embedding strides: 2 until the scale, doubling per block, reaches 8.

    ``conditioning_scale`` is output size / condition size, so a condition at a lower
    resolution is downsampled less to meet the latents (SD's VAE: 8x).
    """
    strides, scale = [], conditioning_scale
    for _ in range(num_blocks):
        strides.append(2 if scale < 8 else 1)
        if scale != 8:
            scale *= 2
    return strides


class DiffusionSatControlNet(ControlNetModel):  # type: ignore[misc]  # diffusers is untyped
    """diffusers' ControlNetModel with DiffusionSat's condition stride and metadata embedding.

    As their ``diffusionsat/controlnet.py``: ``conditioning_in_channels`` condition channels
    (any band count), ``conditioning_scale`` = output / condition resolution (fewer strided
    condition-embedding blocks), and one ``metadata_embedding`` per field, added to the
    timestep embedding for the target's ``metadata`` and the condition's
    ``cond_metadata``. Config fields and weight names are theirs, so their ``controlnet``
    folders load key for key (:func:`load_diffusionsat_controlnet`).

    ``metadata=None`` adds nothing: the ControlNet as it was without metadata.

    Args:
        *args: :class:`~diffusers.ControlNetModel`'s arguments.
        conditioning_in_channels: condition channels (their name; default
            ``conditioning_channels``).
        conditioning_scale: output resolution / condition resolution.
        use_metadata: build the metadata embedding.
        num_metadata: number of metadata fields.
        **kwargs: :class:`~diffusers.ControlNetModel`'s keyword arguments.

    .. versionadded:: 0.2
    """

    @register_to_config  # type: ignore[untyped-decorator]
    @with_config_fields(
        ControlNetModel,
        conditioning_in_channels=None,
        conditioning_scale=1,
        use_metadata=True,
        num_metadata=NUM_METADATA,
    )
    def __init__(
        self,
        *args: Any,
        conditioning_in_channels: int | None = None,
        conditioning_scale: int = 1,
        use_metadata: bool = True,
        num_metadata: int = NUM_METADATA,
        **kwargs: Any,
    ) -> None:
        channels = conditioning_in_channels
        if channels is None:
            channels = kwargs.get('conditioning_channels', 3)
        kwargs['conditioning_channels'] = channels
        super().__init__(*args, **kwargs)
        self.register_to_config(conditioning_in_channels=channels, conditioning_channels=channels)
        # Same modules (and weight names) as diffusers'; only the strides follow their rule.
        downsampling = list(self.controlnet_cond_embedding.blocks)[1::2]
        for conv, stride in zip(
            downsampling, _condition_strides(len(downsampling), conditioning_scale)
        ):
            conv.stride = (stride, stride)
        self.metadata_embedding: nn.ModuleList | None = None
        if use_metadata:
            self.metadata_embedding = metadata_embedding_modules(self.time_embedding, num_metadata)
        self.num_metadata = num_metadata

    @property
    def condition_downsample(self) -> int:
        """How many times smaller than the condition the latents are (e.g. 4 at 256 -> 64)."""
        factor = 1
        for conv in list(self.controlnet_cond_embedding.blocks)[1::2]:
            factor *= conv.stride[0]
        return factor

    @classmethod
    def from_controlnet(
        cls,
        controlnet: ControlNetModel,
        num_metadata: int = NUM_METADATA,
        metadata_from: DiffusionSatUNet | None = None,
        conditioning_scale: int = 1,
    ) -> DiffusionSatControlNet:
        """A ControlNet's weights plus metadata embeddings (e.g. EarthSynth's mask ControlNet).

        Args:
            controlnet: the ControlNet, e.g. the released EarthSynth weights.
            num_metadata: number of metadata fields.
            metadata_from: copy the metadata embeddings of this UNet (as their
                ``from_unet``); None zero-initialises each embedding's output layer, so the
                ControlNet's output is unchanged until trained.
            conditioning_scale: output / condition resolution.

        Returns:
            The ControlNet with metadata.

        Raises:
            ValueError: if the weights do not fit.
        """
        config = {k: v for k, v in controlnet.config.items() if not k.startswith('_')}
        config.update(use_metadata=True, num_metadata=num_metadata)
        config.update(conditioning_scale=conditioning_scale)
        model: DiffusionSatControlNet = cls(**config)
        result = model.load_state_dict(controlnet.state_dict(), strict=False)
        wrong = [k for k in result.missing_keys if not k.startswith('metadata_embedding.')]
        if wrong or result.unexpected_keys:
            raise ValueError(
                f'ControlNet does not fit: missing {wrong}, unexpected {result.unexpected_keys}'
            )
        assert model.metadata_embedding is not None
        if metadata_from is not None and metadata_from.metadata_embedding is not None:
            model.metadata_embedding.load_state_dict(metadata_from.metadata_embedding.state_dict())
        else:
            zero_output_layers(model.metadata_embedding)
        model = model.to(controlnet.device)
        if model.dtype != controlnet.dtype:
            model = model.to(dtype=controlnet.dtype)
        return model

    def metadata_embeddings(self, metadata: Tensor | None, cond_metadata: Tensor | None) -> Tensor:
        """The target's and the condition's metadata embeddings, summed, [B, time_embed_dim]."""
        if self.metadata_embedding is None:
            raise ValueError(
                'this ControlNet was built with use_metadata=False: it takes no metadata'
            )
        total = torch.zeros((), device=self.device, dtype=self.dtype)
        for values in (metadata, cond_metadata):
            if values is not None:
                total = total + embed_metadata(
                    self.time_proj, self.metadata_embedding, values, self.dtype
                )
        return total

    def _check_condition(self, sample: Tensor, controlnet_cond: Tensor) -> None:
        """Refuse a condition whose channels or size do not fit, naming what would."""
        channels = self.config.conditioning_in_channels
        if controlnet_cond.ndim != 4 or controlnet_cond.shape[1] != channels:
            raise ValueError(
                f'controlnet_cond: this ControlNet takes [batch, {channels}, h, w] '
                f'(conditioning_in_channels={channels}), got {list(controlnet_cond.shape)}'
            )
        expected = [side * self.condition_downsample for side in sample.shape[-2:]]
        if list(controlnet_cond.shape[-2:]) != expected:
            raise ValueError(
                f'controlnet_cond: {list(controlnet_cond.shape[-2:])} px does not fit latents '
                f'{list(sample.shape[-2:])} (conditioning_scale='
                f'{self.config.conditioning_scale}: expected {expected} px)'
            )

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        controlnet_cond: Tensor,
        *args: Any,
        metadata: Tensor | None = None,
        cond_metadata: Tensor | None = None,
        **kwargs: Any,
    ) -> ControlNetOutput | tuple[Any, ...]:
        """ControlNetModel's forward with their ``metadata`` and ``cond_metadata``.

        Args:
            sample: noisy latents [B, C, H, W].
            timestep: timesteps.
            encoder_hidden_states: text embeddings [B, L, D].
            controlnet_cond: condition [B, conditioning_in_channels, h, w].
            *args: ControlNetModel's further positional arguments.
            metadata: the target's normalised metadata [B, num_metadata] (zeros:
                unconditional; None: no metadata term).
            cond_metadata: the condition's normalised metadata [B, num_metadata] or
                [B, num_metadata, T].
            **kwargs: ControlNetModel's further keyword arguments.

        Returns:
            ControlNetModel's output.

        Raises:
            ValueError: if the condition or the metadata does not fit.
        """
        self._check_condition(sample, controlnet_cond)
        for name, values in (('metadata', metadata), ('cond_metadata', cond_metadata)):
            if values is not None and values.shape[0] != sample.shape[0]:
                raise ValueError(
                    f'{name}: {values.shape[0]} rows for {sample.shape[0]} samples '
                    f'(expected [{sample.shape[0]}, {self.num_metadata}])'
                )
        hook = None
        if metadata is not None or cond_metadata is not None:
            extra = self.metadata_embeddings(metadata, cond_metadata)
            # diffusers computes the timestep embedding inside forward: add ours to its output.
            hook = self.time_embedding.register_forward_hook(
                lambda module, inputs, output: output + extra.to(output.dtype)
            )
        try:
            output: ControlNetOutput | tuple[Any, ...] = super().forward(
                sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs
            )
        finally:
            if hook is not None:
                hook.remove()
        return output


def controlnet_metadata(
    controlnet: DiffusionSatControlNet, metadata: Tensor | None, cond_metadata: Tensor | None
) -> AbstractContextManager[None]:
    """Hand ``metadata``/``cond_metadata`` to every call of ``controlnet`` in this block.

    diffusers' ControlNet pipelines call the ControlNet without them; a forward pre-hook
    adds them (already stacked as the pipeline's batch, e.g. [unconditional, conditional]).
    """
    return forward_kwargs(controlnet, metadata=metadata, cond_metadata=cond_metadata)


class LowResControlNetPipeline(StableDiffusionControlNetPipeline):  # type: ignore[misc]
    """A ControlNet pipeline whose condition is a low-res image used as given.

    diffusers' pipeline resizes the condition to the output size through an RGB image
    processor; DiffusionSat's super-resolution ControlNet takes any band count at its own
    (lower) resolution, so the tensor is only batched (and doubled for guidance). Pass
    ``latents`` to set the output size.

    .. versionadded:: 0.2
    """

    def prepare_image(
        self,
        image: Tensor,
        width: int,
        height: int,
        batch_size: int,
        num_images_per_prompt: int,
        device: torch.device,
        dtype: torch.dtype,
        do_classifier_free_guidance: bool = False,
        guess_mode: bool = False,
    ) -> Tensor:
        """The low-res tensor [B, C, h, w] in [0, 1], batched as diffusers' pipeline does."""
        repeat = batch_size if image.shape[0] == 1 else num_images_per_prompt
        image = image.repeat_interleave(repeat, dim=0).to(device=device, dtype=dtype)
        if do_classifier_free_guidance and not guess_mode:
            image = torch.cat([image] * 2)
        return image


def is_diffusionsat_controlnet(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ControlNet config with DiffusionSat's fields."""
    config = Path(folder) / 'config.json'
    if not config.is_file():
        return False
    fields = json.loads(config.read_text())
    return 'conditioning_in_channels' in fields and 'conditioning_embedding_out_channels' in fields


def is_temporal_controlnet(folder: str | Path) -> bool:
    """Whether ``folder`` holds a DiffusionSat temporal ControlNet (``ControlNetModel3D``)."""
    config = Path(folder) / 'config.json'
    if not config.is_file():
        return False
    fields = json.loads(config.read_text())
    return 'use_temporal_transformer' in fields or fields.get('_class_name') == 'ControlNetModel3D'


def is_mask_controlnet_export(folder: str | Path) -> bool:
    """Whether ``folder`` is our export of a mask ControlNet (``earthsynth.json``)."""
    meta = Path(folder) / 'earthsynth.json'
    return meta.is_file() and 'condition_encoding' in json.loads(meta.read_text())


def _release_candidates(root: Path) -> list[Path]:
    """``root``, ``root/controlnet`` and each ``checkpoint-N/controlnet``, newest first."""
    checkpoints = sorted(
        (p for p in root.glob('checkpoint-*') if p.name.split('-')[-1].isdigit()),
        key=lambda p: int(p.name.split('-')[-1]),
        reverse=True,
    )
    return [root, root / 'controlnet', *(p / 'controlnet' for p in checkpoints)]


def find_diffusionsat_controlnet(folder: str | Path) -> Path | None:
    """The DiffusionSat super-resolution ControlNet folder of a release folder, or None.

    Looks at ``folder``, ``folder/controlnet`` and the newest ``checkpoint-N/controlnet``
    (their training writes both the final folder and checkpoints). An export of a mask
    ControlNet with metadata (its ``earthsynth.json`` names a ``condition_encoding``) is
    not one, nor is a temporal ControlNet (:func:`find_temporal_controlnet`): None.
    """
    root = Path(folder)
    if is_mask_controlnet_export(root):
        return None
    for candidate in _release_candidates(root):
        if is_diffusionsat_controlnet(candidate) and not is_temporal_controlnet(candidate):
            return candidate
    return None


def find_temporal_controlnet(folder: str | Path) -> Path | None:
    """The temporal ControlNet folder (their ``ControlNetModel3D``) of a release, or None.

    Looks where :func:`find_diffusionsat_controlnet` does.
    """
    for candidate in _release_candidates(Path(folder)):
        if is_temporal_controlnet(candidate):
            return candidate
    return None


def load_diffusionsat_controlnet(
    folder: str | Path, subfolder: str | None = None, dtype: torch.dtype | None = None
) -> DiffusionSatControlNet:
    """Load a DiffusionSat ControlNet folder key for key.

    Args:
        folder: a ControlNet folder (their config fields and weight names).
        subfolder: e.g. ``controlnet``.
        dtype: weights dtype.

    Returns:
        The ControlNet.

    Raises:
        ValueError: naming the folder and every missing, unexpected or mis-shaped weight.
    """
    if is_temporal_controlnet(Path(folder) / (subfolder or '')):
        raise ValueError(
            f"{Path(folder) / (subfolder or '')}: DiffusionSat's temporal ControlNet "
            '(ControlNetModel3D: a sequence of earlier frames, not one condition image); load '
            'it with models.load_temporal_controlnet (no temporal pipeline or family yet)'
        )
    model: DiffusionSatControlNet = load_key_for_key(
        DiffusionSatControlNet, folder, subfolder, dtype, 'DiffusionSat ControlNet'
    )
    return model
