# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionSat's temporal ControlNet: earlier frames and their metadata -> the target date.

Their ``controlnet3d-mixattn_sd21_md7norm_texas`` checkpoint (``ControlNetModel3D`` in their
``diffusionsat/controlnet_3d.py``) runs each conditioning frame through the ControlNet's 2D
blocks with its own metadata, mixes the frames' residuals by temporal attention, and sums them
over frames into the usual 12 down residuals and the mid residual of the UNet. The class here
has their config fields and weight names (``docs/research/diffusionsat_temporal.md``), so
their ``controlnet`` folder loads key for key.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionControlNetPipeline
from diffusers.configuration_utils import register_to_config
from diffusers.models import TransformerTemporalModel
from diffusers.models.controlnets.controlnet import ControlNetOutput
from torch import Tensor, nn

from torchgeo_earthsynth.models.diffusionsat import (
    embed_metadata,
    load_key_for_key,
    with_config_fields,
    zero_output_layers,
)
from torchgeo_earthsynth.models.diffusionsat_controlnet import (
    DiffusionSatControlNet,
    LowResControlNetPipeline,
)

__all__ = (
    'TemporalConditioningEmbedding',
    'TemporalControlNet',
    'TemporalControlNetPipeline',
    'load_temporal_controlnet',
    'temporal_controlnet_from_unet',
)


def _zero(module: nn.Conv3d) -> nn.Conv3d:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class TemporalConditioningEmbedding(nn.Module):
    """The condition embedding over a frame sequence: Conv3d throughout, space-only strides.

    As diffusers' ``ControlNetConditioningEmbedding`` (same module names) with 3x3x3
    convolutions, and (1, 3, 3) convolutions of stride (1, 2, 2) where it downsamples.

    Args:
        conditioning_embedding_channels: output channels (the UNet's first block).
        conditioning_channels: channels of each frame.
        block_out_channels: channels of the embedding's blocks.

    .. versionadded:: 0.4
    """

    def __init__(
        self,
        conditioning_embedding_channels: int,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv3d(conditioning_channels, block_out_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for channels, following in itertools.pairwise(block_out_channels):
            self.blocks.append(nn.Conv3d(channels, channels, 3, padding=1))
            self.blocks.append(
                nn.Conv3d(channels, following, (1, 3, 3), padding=(0, 1, 1), stride=(1, 2, 2))
            )
        self.conv_out = _zero(
            nn.Conv3d(block_out_channels[-1], conditioning_embedding_channels, 3, padding=1)
        )

    def forward(self, frames: Tensor) -> Tensor:
        """Embed ``[B, C, T, H, W]`` frames into ``[B, channels, T, h, w]``."""
        x = F.silu(self.conv_in(frames))
        for block in self.blocks:
            x = F.silu(block(x))
        out: Tensor = self.conv_out(x)
        return out


def _frames_first(x: Tensor, frames: int) -> Tensor:
    """``[(B T), C, h, w]`` -> ``[B, C, T, h, w]`` (frames are batch-minor)."""
    return x.reshape(-1, frames, *x.shape[1:]).transpose(1, 2)


def _frames_folded(x: Tensor) -> Tensor:
    """``[B, C, T, h, w]`` -> ``[(B T), C, h, w]``."""
    return x.transpose(1, 2).flatten(0, 1)


def _residual_widths(block_out_channels: tuple[int, ...], layers_per_block: int) -> list[int]:
    """Channels of the ControlNet's down residuals: conv_in, each layer, each downsampler."""
    widths = [block_out_channels[0]]
    for level, channels in enumerate(block_out_channels):
        widths += [channels] * layers_per_block
        if level < len(block_out_channels) - 1:
            widths.append(channels)
    return widths


class TemporalControlNet(DiffusionSatControlNet):
    """DiffusionSat's ``ControlNetModel3D``: a ControlNet over a sequence of earlier frames.

    Each frame of ``controlnet_cond`` ``[B, C, T, H, W]`` (values in 0..1, as their pipeline
    gives them) goes through the 2D down and mid blocks with the timestep embedding plus the
    target's ``metadata`` and its own ``cond_metadata[:, :, t]``. Every residual then goes
    through its 1x1x1 zero convolution; at the first residual and after each downsampler a
    ``TransformerTemporalModel`` attends across frames at each pixel, gated by a mixing weight
    ``a`` clamped to 0..1 (``a * temporal(r) + (1 - a) * r``); the residuals are summed over
    frames. Weight names and shapes, config fields (``use_temporal_transformer``,
    ``conditioning_in_channels``, ``use_metadata``, ``num_metadata``) and the forward are
    theirs.

    Args:
        *args: :class:`~torchgeo_earthsynth.models.DiffusionSatControlNet`'s arguments.
        use_temporal_transformer: build the temporal attention blocks (theirs: True).
        first_temporal_heads: heads of the temporal attention at the first residual (theirs:
            8; not in their config, which hard-codes it).
        first_temporal_head_dim: their width (theirs: 64; 8 x 64 = 512 is most of a tiny
            model's compute, so tiny presets narrow it).
        **kwargs: its keyword arguments (``conditioning_scale`` must stay 1).

    Raises:
        ValueError: if ``conditioning_scale`` is not 1 (theirs has no such stride).

    .. versionadded:: 0.4
    """

    @register_to_config  # type: ignore[untyped-decorator]
    @with_config_fields(
        DiffusionSatControlNet,
        use_temporal_transformer=True,
        first_temporal_heads=8,
        first_temporal_head_dim=64,
    )
    def __init__(
        self,
        *args: Any,
        use_temporal_transformer: bool = True,
        first_temporal_heads: int = 8,
        first_temporal_head_dim: int = 64,
        **kwargs: Any,
    ) -> None:
        if kwargs.get('conditioning_scale', 1) != 1:
            raise ValueError(
                'TemporalControlNet: conditioning_scale must be 1 (frames at the output '
                f'resolution), got {kwargs["conditioning_scale"]}'
            )
        super().__init__(*args, **kwargs)
        config = self.config
        first = config.block_out_channels[0]
        self.controlnet_cond_embedding = TemporalConditioningEmbedding(
            first,
            config.conditioning_in_channels,
            tuple(config.conditioning_embedding_out_channels),
        )
        widths = _residual_widths(config.block_out_channels, config.layers_per_block)
        self.controlnet_down_blocks = nn.ModuleList(_zero(nn.Conv3d(c, c, 1)) for c in widths)
        mid = config.block_out_channels[-1]
        self.controlnet_mid_block = _zero(nn.Conv3d(mid, mid, 1))
        first = (first_temporal_heads, first_temporal_head_dim)
        temporal = self._temporal_blocks(widths, first) if use_temporal_transformer else {}
        self.temporal_blocks = nn.ModuleList(
            temporal.get(i, nn.Identity()) for i in range(len(widths))
        )
        self.mixing_attns = nn.ParameterList(
            nn.Parameter(torch.zeros(()), requires_grad=i in temporal) for i in range(len(widths))
        )

    @property
    def condition_downsample(self) -> int:
        """How many times smaller than the frames the latents are (the space strides)."""
        embedding: TemporalConditioningEmbedding = self.controlnet_cond_embedding
        factor = 1
        for conv in list(embedding.blocks)[1::2]:
            assert isinstance(conv, nn.Conv3d)
            factor *= int(conv.stride[-1])
        return factor

    def _temporal_blocks(self, widths: list[int], first: tuple[int, int]) -> dict[int, nn.Module]:
        """Their temporal attention: at residual 0 and at each downsampler's residual."""
        config = self.config
        levels = len(config.block_out_channels)
        head_dims = config.attention_head_dim
        if isinstance(head_dims, int):
            head_dims = [head_dims] * levels
        blocks: dict[int, nn.Module] = {
            0: TransformerTemporalModel(
                num_attention_heads=first[0],
                attention_head_dim=first[1],
                in_channels=widths[0],
                num_layers=1,
                norm_num_groups=config.norm_num_groups,
            )
        }
        per_level = config.layers_per_block + 1
        for level in range(levels - 1):
            channels = config.block_out_channels[level]
            blocks[(level + 1) * per_level] = TransformerTemporalModel(
                num_attention_heads=channels // head_dims[level],
                attention_head_dim=head_dims[level],
                in_channels=channels,
                num_layers=1,
                cross_attention_dim=config.cross_attention_dim,
                norm_num_groups=config.norm_num_groups,
            )
        return blocks

    def _embedding(
        self,
        timestep: Tensor | float | int,
        batch: int,
        frames: int,
        metadata: Tensor | None,
        cond_metadata: Tensor | None,
    ) -> Tensor:
        """Timestep + target metadata + each frame's metadata, ``[(B T), time_embed_dim]``."""
        timesteps = torch.as_tensor(timestep, device=self.device).flatten().expand(batch)
        projected = self.time_proj(timesteps.repeat_interleave(frames)).to(self.dtype)
        embedding: Tensor = self.time_embedding(projected)
        fields = self.metadata_embedding
        if metadata is None and cond_metadata is None:
            return embedding
        if fields is None:
            raise ValueError('this ControlNet was built with use_metadata=False: no metadata')
        if metadata is not None:
            target = embed_metadata(self.time_proj, fields, metadata, self.dtype)
            embedding = embedding + target.repeat_interleave(frames, 0)
        if cond_metadata is not None:
            if cond_metadata.ndim == 3:  # [B, fields, T]: each frame its own
                per_frame = cond_metadata.movedim(2, 1).flatten(0, 1)
                embedding = embedding + embed_metadata(
                    self.time_proj, fields, per_frame, self.dtype
                )
            else:
                shared = embed_metadata(self.time_proj, fields, cond_metadata, self.dtype)
                embedding = embedding + shared.repeat_interleave(frames, 0)
        return embedding

    def _check_frames(self, sample: Tensor, frames: Tensor, cond_metadata: Tensor | None) -> None:
        channels = self.config.conditioning_in_channels
        if frames.ndim != 5 or frames.shape[1] != channels:
            raise ValueError(
                f'controlnet_cond: this temporal ControlNet takes [batch, {channels}, frames, '
                f'h, w] (conditioning_in_channels={channels}), got {list(frames.shape)}'
            )
        if frames.shape[0] != sample.shape[0]:
            raise ValueError(
                f'controlnet_cond: {frames.shape[0]} sequences for {sample.shape[0]} samples'
            )
        if cond_metadata is not None and cond_metadata.ndim == 3:
            if cond_metadata.shape[2] != frames.shape[2]:
                raise ValueError(
                    f'cond_metadata: {cond_metadata.shape[2]} frames of metadata for '
                    f'{frames.shape[2]} conditioning frames'
                )

    def forward(  # type: ignore[override]  # frames, not one condition image
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        controlnet_cond: Tensor,
        conditioning_scale: float = 1.0,
        metadata: Tensor | None = None,
        cond_metadata: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guess_mode: bool = False,
        return_dict: bool = True,
    ) -> ControlNetOutput | tuple[Any, ...]:
        """Their forward: per-frame 2D blocks, temporal mixing, residuals summed over frames.

        Args:
            sample: noisy latents ``[B, 4, h, w]``.
            timestep: timesteps.
            encoder_hidden_states: text embeddings ``[B, L, D]``.
            controlnet_cond: earlier frames ``[B, C, T, H, W]`` in 0..1.
            conditioning_scale: factor on every residual.
            metadata: the target's normalised metadata ``[B, fields]``.
            cond_metadata: the frames' ``[B, fields, T]`` (or ``[B, fields]`` for all).
            attention_mask: attention mask of the text.
            cross_attention_kwargs: passed to the attention processors.
            guess_mode: scale residuals from 0.1 (first) to 1 (mid), as diffusers.
            return_dict: return a ``ControlNetOutput`` (else a tuple).

        Returns:
            The 12 (for SD's layout) down residuals and the mid residual, ``[B, C_i, h_i, w_i]``.

        Raises:
            ValueError: if the frames or their metadata do not fit.
        """
        self._check_frames(sample, controlnet_cond, cond_metadata)
        batch, frames = controlnet_cond.shape[0], controlnet_cond.shape[2]
        if self.config.controlnet_conditioning_channel_order == 'bgr':
            controlnet_cond = controlnet_cond.flip(1)
        embedding = self._embedding(timestep, batch, frames, metadata, cond_metadata)
        text = encoder_hidden_states.repeat_interleave(frames, 0)
        x = self.conv_in(sample).repeat_interleave(frames, 0)
        x = x + _frames_folded(self.controlnet_cond_embedding(controlnet_cond))
        residuals: tuple[Tensor, ...] = (x,)
        for block in self.down_blocks:
            if getattr(block, 'has_cross_attention', False):
                x, more = block(
                    hidden_states=x,
                    temb=embedding,
                    encoder_hidden_states=text,
                    attention_mask=attention_mask,
                    cross_attention_kwargs=cross_attention_kwargs,
                )
            else:
                x, more = block(hidden_states=x, temb=embedding)
            residuals += more
        x = self.mid_block(
            x,
            embedding,
            encoder_hidden_states=text,
            attention_mask=attention_mask,
            cross_attention_kwargs=cross_attention_kwargs,
        )
        outputs = []
        for i, residual in enumerate(residuals):
            r = self.controlnet_down_blocks[i](_frames_first(residual, frames))
            temporal = self.temporal_blocks[i]
            if not isinstance(temporal, nn.Identity):
                weight = self.mixing_attns[i]
                # clamped forward, straight-through gradient (their MixingParam)
                mix = (weight + (weight.clamp(0, 1) - weight).detach()).to(r.dtype)
                attended = temporal(
                    _frames_folded(r),
                    num_frames=frames,
                    cross_attention_kwargs=cross_attention_kwargs,
                ).sample
                r = mix * _frames_first(attended, frames) + (1 - mix) * r
            outputs.append(r.sum(2))
        mid = self.controlnet_mid_block(_frames_first(x, frames)).sum(2)
        if guess_mode and not self.config.global_pool_conditions:
            scales = torch.logspace(-1, 0, len(outputs) + 1, device=sample.device)
            outputs = [r * s for r, s in zip(outputs, scales * conditioning_scale)]
            mid = mid * scales[-1] * conditioning_scale
        else:
            outputs = [r * conditioning_scale for r in outputs]
            mid = mid * conditioning_scale
        if self.config.global_pool_conditions:
            outputs = [r.mean(dim=(2, 3), keepdim=True) for r in outputs]
            mid = mid.mean(dim=(2, 3), keepdim=True)
        if not return_dict:
            return (tuple(outputs), mid)
        return ControlNetOutput(down_block_res_samples=tuple(outputs), mid_block_res_sample=mid)


def load_temporal_controlnet(
    folder: str | Path, subfolder: str | None = None, dtype: torch.dtype | None = None
) -> TemporalControlNet:
    """Load DiffusionSat's temporal ControlNet folder (their ``ControlNetModel3D``) key for key.

    Args:
        folder: a ControlNet folder (their config fields and weight names), or its parent
            with ``subfolder`` (their release: ``controlnet``).
        subfolder: e.g. ``controlnet``.
        dtype: weights dtype.

    Returns:
        The ControlNet.

    Raises:
        ValueError: naming the folder and every missing, unexpected or mis-shaped weight.

    .. versionadded:: 0.4
    """
    model: TemporalControlNet = load_key_for_key(
        TemporalControlNet, folder, subfolder, dtype, 'DiffusionSat temporal ControlNet'
    )
    return model


class TemporalControlNetPipeline(StableDiffusionControlNetPipeline):  # type: ignore[misc]
    """A ControlNet pipeline whose condition is a sequence of earlier frames, used as given.

    ``image`` is ``[B, C, T, H, W]`` in 0..1 (their pipeline's ``is_temporal`` layout), batched
    and doubled for guidance as diffusers does; the output size is the frames'.

    .. versionadded:: 0.4
    """

    # the condition tensor as given, only batched: as the low-res condition of SR ControlNets
    prepare_image = LowResControlNetPipeline.prepare_image


def temporal_controlnet_from_unet(
    unet: Any,
    conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256),
    first_temporal: tuple[int, int] = (8, 64),
) -> TemporalControlNet:
    """A temporal ControlNet copied from a DiffusionSat UNet, as their ``from_unet``.

    The input convolution, timestep and metadata embeddings, down and mid blocks are the
    UNet's; the zero convolutions and mixing weights start at 0 (the UNet's output is
    unchanged until trained); the temporal blocks keep diffusers' initialisation. A UNet
    without metadata embeddings leaves the ControlNet's own with zeroed output layers.

    Args:
        unet: a :class:`~torchgeo_earthsynth.models.DiffusionSatUNet` (or any diffusers
            ``UNet2DConditionModel``: no metadata embeddings copied then).
        conditioning_embedding_out_channels: the condition embedding's channels; one
            stride-2 block fewer than entries, so it must downsample as the VAE does.
        first_temporal: heads and head width of the first temporal attention (theirs: 8, 64).

    Returns:
        The ControlNet.
    """
    config = unet.config
    fields = (
        'in_channels',
        'flip_sin_to_cos',
        'freq_shift',
        'down_block_types',
        'only_cross_attention',
        'block_out_channels',
        'layers_per_block',
        'downsample_padding',
        'mid_block_scale_factor',
        'act_fn',
        'norm_num_groups',
        'norm_eps',
        'cross_attention_dim',
        'attention_head_dim',
        'use_linear_projection',
        'upcast_attention',
        'resnet_time_scale_shift',
    )
    num_metadata = getattr(unet, 'num_metadata', None) or getattr(config, 'num_metadata', 7)
    model = TemporalControlNet(
        **{name: config[name] for name in fields if name in config},
        conditioning_embedding_out_channels=conditioning_embedding_out_channels,
        num_metadata=num_metadata,
        first_temporal_heads=first_temporal[0],
        first_temporal_head_dim=first_temporal[1],
    )
    copied = {
        key: value
        for key, value in unet.state_dict().items()
        if key.startswith(('conv_in.', 'time_embedding.', 'metadata_embedding.'))
        or key.startswith(('down_blocks.', 'mid_block.'))
    }
    result = model.load_state_dict(copied, strict=False)
    if result.unexpected_keys:
        raise ValueError(f'the UNet does not fit the ControlNet: {result.unexpected_keys}')
    if model.metadata_embedding is not None and not any(
        key.startswith('metadata_embedding.') for key in copied
    ):  # a UNet without metadata: the ControlNet's own embeddings start silent
        zero_output_layers(model.metadata_embedding)
    moved: TemporalControlNet = model.to(unet.device)
    return moved if moved.dtype == unet.dtype else moved.to(dtype=unet.dtype)
