# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The DiffusionSat family: a metadata-conditioned UNet that loads DiffusionSat's checkpoints."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import Tensor, nn
from transformers import CLIPTextModel, CLIPTokenizer

from torchgeo_earthsynth.conditions import METADATA_FIELDS, NUM_METADATA, check_metadata
from torchgeo_earthsynth.models.stable_diffusion import DiffusionParts

__all__ = (
    'DIFFUSIONSAT_CHECKPOINTS',
    'SD21_ID',
    'DiffusionSatUNet',
    'diffusionsat_parts',
    'find_diffusionsat_unet',
    'is_diffusionsat_unet',
    'load_diffusionsat_unet',
    'normalize_metadata',
    'unconditional_metadata',
)

_Init = TypeVar('_Init', bound=Callable[..., None])

#: DiffusionSat's base model (v-prediction).
SD21_ID: Final = 'stabilityai/stable-diffusion-2-1'

#: DiffusionSat's released checkpoints (Zenodo zips of diffusers folders) and their status
#: here. "layout supported": their config fields and weight names, as their code writes them,
#: load key for key (tested on tiny folders in that layout; the zips were not downloaded).
DIFFUSIONSAT_CHECKPOINTS: Final = {
    'finetune_sd21_sn-satlas-fmow_snr5_md7norm_bs64': 'layout supported (512 px text + metadata)',
    'finetune_sd21_256_sn-satlas-fmow_snr5_md7norm_bs64': 'layout supported (256 px)',
    'controlnet_sd21_md7norm_fmow_condres256': (
        'layout supported (super-resolution ControlNet: 10 Sentinel-2 bands at 256 px -> 512 px '
        'RGB; its base is the 512 px UNet above)'
    ),
    'controlnet3d-mixattn_sd21_md7norm_texas': (
        'ControlNet layout supported (models.TemporalControlNet: Conv3d condition embedding, '
        'temporal transformers, mixing weights; families.TemporalFamily generates from '
        'frames + frame_metadata); no loader of the full release folder yet'
    ),
}

# DiffusionSat's loaders shift lon, lat and year to be non-negative (data_util.py ``base_*``),
# then ``metadata_normalize`` divides each field by its range and multiplies by 1000.
_SHIFT: Final = (180.0, 90.0, 0.0, 0.0, -1980.0, 0.0, 0.0)
_RANGE: Final = (360.0, 180.0, 1.0, 1.0, 2100.0 - 1980.0, 12.0, 31.0)
_SCALE: Final = 1000.0


def normalize_metadata(metadata: Tensor) -> Tensor:
    """Physical-unit metadata -> DiffusionSat's normalised metadata.

    Applies DiffusionSat's loaders (``lon + 180``, ``lat + 90``, ``year - 1980``) then its
    ``metadata_normalize`` (lon / 360, lat / 180, gsd / 1, cloud, year / 120, month / 12,
    day / 31, each times 1000). Unknown fields (NaN) become 0, the value DiffusionSat's
    training gives a dropped field and its guidance gives the unconditional branch. GSD is
    the metres per pixel of the image as generated (DiffusionSat scales the source GSD by
    original / target size).

    Args:
        metadata: [B, 7] in :data:`~torchgeo_earthsynth.conditions.METADATA_FIELDS` order,
            physical units, NaN where unknown.

    Returns:
        float32 [B, 7] normalised metadata.

    Raises:
        ValueError: if the shape is not [B, 7].
    """
    metadata = check_metadata(metadata, len(metadata) if metadata.ndim else 0)
    shift = metadata.new_tensor(_SHIFT)
    scale = metadata.new_tensor(_RANGE)
    normalised = (metadata + shift) / scale * _SCALE
    return torch.nan_to_num(normalised, nan=0.0)


def unconditional_metadata(batch_size: int, device: torch.device | str | None = None) -> Tensor:
    """DiffusionSat's unconditional metadata (all zeros), float32 [B, 7]."""
    return torch.zeros(batch_size, NUM_METADATA, device=device)


def with_config_fields(parent: type, **fields: Any) -> Callable[[_Init], _Init]:
    """Give the decorated ``__init__`` ``parent.__init__``'s signature plus ``fields``.

    diffusers reads a model's config fields from its ``__init__`` signature, so a subclass
    must expose every parent field by name to save and load their configs.

    Args:
        parent: the diffusers model class subclassed.
        **fields: extra keyword-only fields and their defaults.

    Returns:
        A decorator.
    """

    def decorate(init: _Init) -> _Init:
        signature = inspect.signature(parent.__init__)  # type: ignore[misc]  # the class's own
        extra = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
            for name, default in fields.items()
        ]
        parameters = [*signature.parameters.values(), *extra]
        init.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return init

    return decorate


def metadata_embedding_modules(time_embedding: Any, num_metadata: int) -> nn.ModuleList:
    """DiffusionSat's per-field metadata embeddings, shaped as ``time_embedding``."""
    in_dim = time_embedding.linear_1.in_features
    out_dim = time_embedding.linear_2.out_features
    return nn.ModuleList([TimestepEmbedding(in_dim, out_dim) for _ in range(num_metadata)])


def zero_output_layers(embeddings: nn.ModuleList) -> None:
    """Zero each metadata embedding's output layer: a model's output is unchanged until trained.

    Seven random embeddings added to the timestep embedding would shift a pretrained model's
    every step (and bury a model trained from scratch in noise) before it learns any field.
    """
    for embedding in embeddings:
        output_layer = cast(nn.Linear, embedding.linear_2)
        nn.init.zeros_(output_layer.weight)
        nn.init.zeros_(output_layer.bias)


def embed_metadata(
    time_proj: nn.Module, embeddings: nn.ModuleList, metadata: Tensor, dtype: torch.dtype
) -> Tensor:
    """Sum over fields (and over conditions, if any) of DiffusionSat's metadata embeddings.

    Each normalised value goes through the sinusoidal ``time_proj`` and its field's
    embedding, as their ``SatUNet`` and ``ControlNetModel`` do.

    Args:
        time_proj: the model's sinusoidal timestep projection.
        embeddings: one :class:`~diffusers.models.embeddings.TimestepEmbedding` per field.
        metadata: normalised [B, fields] or, for several conditions, [B, fields, T].
        dtype: the embeddings' dtype.

    Returns:
        [B, time_embed_dim], added to the timestep embedding.

    Raises:
        ValueError: if the shape is not [B, fields] or [B, fields, T].
    """
    fields = len(embeddings)
    if metadata.ndim not in (2, 3) or metadata.shape[1] != fields:
        raise ValueError(
            f'metadata: expected shape [batch, {fields}] or [batch, {fields}, conditions] '
            f'(normalised {", ".join(METADATA_FIELDS)}), got {list(metadata.shape)}'
        )
    per_field = metadata.movedim(1, -1)  # [B, (T,) fields]
    projected = time_proj(per_field.reshape(-1)).view(*per_field.shape, -1).to(dtype)
    total = sum(embed(projected[..., i, :]) for i, embed in enumerate(embeddings))
    summed: Tensor = total.sum(dim=1) if metadata.ndim == 3 else total
    return summed


class DiffusionSatUNet(UNet2DConditionModel):  # type: ignore[misc]  # diffusers is untyped
    """UNet2DConditionModel with DiffusionSat's metadata embedding (their ``SatUNet``).

    Each normalised metadata value goes through the UNet's sinusoidal ``time_proj`` and its
    own :class:`~diffusers.models.embeddings.TimestepEmbedding`; the seven embeddings are
    added to the timestep embedding. Config fields (``use_metadata``, ``num_metadata``) and
    weight names (``metadata_embedding.N.linear_1.weight`` ...) are DiffusionSat's, so their
    ``unet`` folders load key for key (:func:`load_diffusionsat_unet`).

    Args:
        *args: :class:`~diffusers.UNet2DConditionModel`'s arguments.
        use_metadata: build the metadata embedding.
        num_metadata: number of metadata fields (7 in DiffusionSat).
        **kwargs: :class:`~diffusers.UNet2DConditionModel`'s keyword arguments.

    .. versionadded:: 0.2
    """

    @register_to_config  # type: ignore[untyped-decorator]
    @with_config_fields(UNet2DConditionModel, use_metadata=True, num_metadata=NUM_METADATA)
    def __init__(
        self, *args: Any, use_metadata: bool = True, num_metadata: int = NUM_METADATA, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.metadata_embedding: nn.ModuleList | None = None
        if use_metadata:
            self.metadata_embedding = metadata_embedding_modules(self.time_embedding, num_metadata)
        self.num_metadata = num_metadata

    @classmethod
    def from_unet(
        cls, unet: UNet2DConditionModel, num_metadata: int = NUM_METADATA
    ) -> DiffusionSatUNet:
        """A metadata UNet with ``unet``'s weights and new, zero-output metadata embeddings.

        DiffusionSat's training starts the embeddings at random; here each embedding's output
        layer starts at zero (:func:`zero_output_layers`), so the UNet computes exactly
        ``unet``'s output until it is trained, as a ControlNet's zero convolutions do.

        Args:
            unet: e.g. Stable Diffusion 2.1's UNet.
            num_metadata: number of metadata fields.

        Returns:
            The UNet.
        """
        config = {k: v for k, v in unet.config.items() if not k.startswith('_')}
        config.update(use_metadata=True, num_metadata=num_metadata)
        model: DiffusionSatUNet = cls(**config)
        result = model.load_state_dict(unet.state_dict(), strict=False)
        wrong = [k for k in result.missing_keys if not k.startswith('metadata_embedding.')]
        if wrong or result.unexpected_keys:
            unexpected = result.unexpected_keys
            raise ValueError(f'UNet does not fit: missing {wrong}, unexpected {unexpected}')
        assert model.metadata_embedding is not None
        zero_output_layers(model.metadata_embedding)
        model = model.to(unet.device)
        if model.dtype != unet.dtype:
            model = model.to(dtype=unet.dtype)
        return model

    def metadata_embeddings(self, metadata: Tensor) -> Tensor:
        """Sum of the per-field embeddings of normalised metadata, [B, time_embed_dim].

        Args:
            metadata: [B, num_metadata] normalised (see :func:`normalize_metadata`).

        Returns:
            The embedding added to the timestep embedding.

        Raises:
            ValueError: if the UNet has no metadata embedding or the shape is wrong.
        """
        if self.metadata_embedding is None:
            raise ValueError('this UNet was built with use_metadata=False: it takes no metadata')
        if metadata.ndim != 2:
            raise ValueError(
                f'metadata: expected shape [batch, {self.num_metadata}] (normalised '
                f'{", ".join(METADATA_FIELDS)}), got {list(metadata.shape)}'
            )
        return embed_metadata(self.time_proj, self.metadata_embedding, metadata, self.dtype)

    def get_aug_embed(
        self, emb: Tensor, encoder_hidden_states: Tensor, added_cond_kwargs: dict[str, Any]
    ) -> Tensor | None:
        """Diffusers' additional embeddings, plus the metadata embedding."""
        added = dict(added_cond_kwargs or {})
        metadata = added.pop('metadata', None)
        aug: Tensor | None = super().get_aug_embed(emb, encoder_hidden_states, added)
        if metadata is None:
            return aug
        md_emb = self.metadata_embeddings(metadata)
        return md_emb if aug is None else aug + md_emb

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        *args: Any,
        metadata: Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> UNet2DConditionOutput | tuple[Tensor, ...]:
        """UNet2DConditionModel's forward with DiffusionSat's ``metadata``.

        Metadata may also come as ``cross_attention_kwargs['metadata']``: diffusers'
        pipelines hand that dict to the UNet untouched, so their samplers can carry it.

        Args:
            sample: noisy latents [B, C, H, W].
            timestep: timesteps.
            encoder_hidden_states: text embeddings [B, L, D].
            *args: UNet2DConditionModel's further positional arguments.
            metadata: normalised metadata [B, num_metadata] (zeros: unconditional).
            cross_attention_kwargs: passed on to the attention processors.
            added_cond_kwargs: passed on to diffusers' additional embeddings.
            **kwargs: UNet2DConditionModel's further keyword arguments.

        Returns:
            UNet2DConditionModel's output.

        Raises:
            ValueError: if metadata is missing or its shape is not [B, num_metadata].
        """
        if cross_attention_kwargs and 'metadata' in cross_attention_kwargs:
            cross_attention_kwargs = dict(cross_attention_kwargs)
            metadata = cross_attention_kwargs.pop('metadata')
        if self.metadata_embedding is not None:
            if metadata is None:
                raise ValueError(
                    'DiffusionSatUNet needs metadata [batch, num_metadata] (normalised; '
                    'zeros for the unconditional branch)'
                )
            if metadata.ndim != 2 or metadata.shape[0] != sample.shape[0]:
                raise ValueError(
                    f'metadata: expected shape [{sample.shape[0]}, {self.num_metadata}] for '
                    f'{sample.shape[0]} samples, got {list(metadata.shape)}'
                )
            added_cond_kwargs = {**(added_cond_kwargs or {}), 'metadata': metadata}
        elif metadata is not None:
            raise ValueError('this UNet was built with use_metadata=False: it takes no metadata')
        output: UNet2DConditionOutput | tuple[Tensor, ...] = super().forward(
            sample,
            timestep,
            encoder_hidden_states,
            *args,
            cross_attention_kwargs=cross_attention_kwargs or None,
            added_cond_kwargs=added_cond_kwargs,
            **kwargs,
        )
        return output


def is_diffusionsat_unet(folder: str | Path) -> bool:
    """Whether ``folder`` holds a UNet config with DiffusionSat's metadata fields."""
    config = Path(folder) / 'config.json'
    if not config.is_file():
        return False
    fields = json.loads(config.read_text())
    is_controlnet = 'conditioning_embedding_out_channels' in fields
    return (
        bool(fields.get('use_metadata', False)) and 'num_metadata' in fields and not is_controlnet
    )


def find_diffusionsat_unet(folder: str | Path) -> Path | None:
    """The DiffusionSat UNet folder of a checkpoint folder, or None.

    Looks at ``folder`` itself, ``folder/unet`` and, as their releases are laid out
    (``finetune_.../checkpoint-N/unet``), the newest ``checkpoint-N/unet``.

    Args:
        folder: a UNet folder, a pipeline folder or a training output folder.

    Returns:
        The UNet folder, or None where there is none.
    """
    root = Path(folder)
    checkpoints = sorted(
        (p for p in root.glob('checkpoint-*') if p.name.split('-')[-1].isdigit()),
        key=lambda p: int(p.name.split('-')[-1]),
        reverse=True,
    )
    for candidate in (root, root / 'unet', *(p / 'unet' for p in checkpoints)):
        if is_diffusionsat_unet(candidate):
            return candidate
    return None


def load_key_for_key(
    model_class: Any,
    folder: str | Path,
    subfolder: str | None = None,
    dtype: torch.dtype | None = None,
    what: str = 'DiffusionSat model',
) -> Any:
    """Load a diffusers model folder, every weight accounted for.

    Args:
        model_class: the diffusers model class.
        folder: a diffusers model folder, or its parent with ``subfolder``.
        subfolder: e.g. ``unet``.
        dtype: weights dtype.
        what: the model's name, for messages.

    Returns:
        The model.

    Raises:
        ValueError: naming the folder and every missing, unexpected or mis-shaped weight.
    """
    kwargs: dict[str, Any] = {'subfolder': subfolder} if subfolder else {}
    if dtype is not None:
        kwargs['torch_dtype'] = dtype
    where = Path(folder) / (subfolder or '')
    try:
        model, info = model_class.from_pretrained(
            str(folder), output_loading_info=True, low_cpu_mem_usage=False, **kwargs
        )
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f'{where}: cannot load a {what} ({error})') from error
    problems = {k: v for k, v in info.items() if v and k != 'error_msgs'}
    if problems or info.get('error_msgs'):
        raise ValueError(f'{where}: weights do not match the {what} config: {info}')
    return model


def load_diffusionsat_unet(
    folder: str | Path, subfolder: str | None = None, dtype: torch.dtype | None = None
) -> DiffusionSatUNet:
    """Load a DiffusionSat UNet folder key for key.

    Args:
        folder: a diffusers UNet folder (``config.json`` with ``use_metadata``/``num_metadata``
            and weights), or its parent with ``subfolder``.
        subfolder: e.g. ``unet``.
        dtype: weights dtype.

    Returns:
        The UNet.

    Raises:
        ValueError: naming the folder and every missing, unexpected or mis-shaped weight.
    """
    unet: DiffusionSatUNet = load_key_for_key(
        DiffusionSatUNet, folder, subfolder, dtype, 'DiffusionSat UNet'
    )
    return unet


def diffusionsat_parts(
    folder: str | Path,
    unet_folder: str | Path | None = None,
    base: str | Path | None = None,
    dtype: torch.dtype | None = None,
) -> DiffusionParts:
    """The text + metadata model's parts from a DiffusionSat checkpoint folder.

    Their releases hold a pipeline folder (``model_index.json``, VAE, text encoder, tokenizer,
    scheduler) with the metadata UNet in ``checkpoint-N/unet``; a bare UNet folder takes the
    other parts from ``base`` (default SD 2.1, their base).

    Args:
        folder: the checkpoint folder.
        unet_folder: the UNet folder (default: found with :func:`find_diffusionsat_unet`).
        base: where the other parts come from (default ``folder`` if it is a pipeline, else
            SD 2.1).
        dtype: weights dtype.

    Returns:
        The parts, the UNet a :class:`DiffusionSatUNet`.

    Raises:
        ValueError: if there is no DiffusionSat UNet, loading fails, or the text encoder does
            not fit the UNet.
    """
    unet_folder = unet_folder or find_diffusionsat_unet(folder)
    if unet_folder is None:
        raise ValueError(f'{folder}: no UNet config with use_metadata/num_metadata (DiffusionSat)')
    unet = load_diffusionsat_unet(unet_folder, dtype=dtype)
    if base is None:
        base = folder if (Path(folder) / 'model_index.json').is_file() else SD21_ID
    kwargs: dict[str, Any] = {'torch_dtype': dtype} if dtype is not None else {}
    # Part by part: a model_index.json may name the UNet's class after their code or ours.
    try:
        parts = DiffusionParts(
            unet=unet,
            vae=AutoencoderKL.from_pretrained(str(base), subfolder='vae', **kwargs),
            text_encoder=CLIPTextModel.from_pretrained(
                str(base), subfolder='text_encoder', **kwargs
            ),
            tokenizer=CLIPTokenizer.from_pretrained(str(base), subfolder='tokenizer'),
            scheduler=DDPMScheduler.from_pretrained(str(base), subfolder='scheduler'),
        )
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f'{base}: cannot load the parts around the DiffusionSat UNet {unet_folder} '
            '(expected a diffusers folder or hub id with vae/, text_encoder/, tokenizer/, '
            f'scheduler/): {error}'
        ) from error
    hidden = parts.text_encoder.config.hidden_size
    if hidden != unet.config.cross_attention_dim:
        raise ValueError(
            f'{base}: text encoder hidden_size {hidden} != DiffusionSat UNet '
            f'cross_attention_dim {unet.config.cross_attention_dim} ({unet_folder})'
        )
    return parts
