# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The global content condition (CRS-Diff's reference image) through diffusers' IP-Adapter.

CRS-Diff steers generation by a reference image's CLIP embedding turned into 4 extra
context tokens (its ``GlobalContentAdapter``). diffusers' IP-Adapter is that mechanism
with decoupled cross-attention: :class:`~diffusers.models.embeddings.ImageProjection`
(the UNet's ``encoder_hid_proj``) turns a CLIP image embedding into 4 tokens, and
``IPAdapterAttnProcessor2_0`` attends to them with its own keys and values
(``to_k_ip``/``to_v_ip``), adding ``scale *`` that attention to the text attention. We use
it rather than a home-made adapter: pipelines take ``ip_adapter_image_embeds``, a scale of
0 skips the image branch (the output is bit for bit the base model's), the layers train
as any module, and the weights are saved in the layout diffusers' ``load_ip_adapter``
reads (``ip_adapter.safetensors`` with ``image_proj.*`` and ``ip_adapter.<id>.to_k_ip``
keys, the CLIP vision model in ``image_encoder/``).

Fresh adapters start as IP-Adapter's training does: the image keys and values copied
from the text ones, the projection at PyTorch's default initialisation. A dropped
reference is a zero embedding, what diffusers' pipelines feed the unconditional branch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import (
    AttnProcessor2_0,
    IPAdapterAttnProcessor,
    IPAdapterAttnProcessor2_0,
)
from diffusers.models.embeddings import ImageProjection
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import CLIPVisionModelWithProjection
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = (
    'IMAGE_ENCODER_FOLDER',
    'IP_ADAPTER_WEIGHTS',
    'REFERENCE_ENCODER_ID',
    'REFERENCE_TOKENS',
    'add_global_content',
    'encode_reference',
    'fresh_ip_adapter',
    'has_global_content',
    'ip_adapter_modules',
    'ip_adapter_scale',
    'load_global_content',
    'save_ip_adapter',
    'without_ip_adapter',
)

#: The CLIP vision model of the pretrained preset (CRS-Diff's: 768-d image embeddings).
REFERENCE_ENCODER_ID: Final = 'openai/clip-vit-large-patch14'
#: The adapter's weights in an export, as diffusers' ``load_ip_adapter`` reads them.
IP_ADAPTER_WEIGHTS: Final = 'ip_adapter.safetensors'
#: The CLIP vision model's folder beside them (``load_ip_adapter``'s default).
IMAGE_ENCODER_FOLDER: Final = 'image_encoder'
#: Context tokens per reference image (IP-Adapter's and CRS-Diff's 4).
REFERENCE_TOKENS: Final = 4

_IP_PROCESSORS: Final = (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0)


def has_global_content(unet: UNet2DConditionModel) -> bool:
    """Whether the UNet carries an IP-Adapter (a reference image's tokens)."""
    return any(isinstance(p, _IP_PROCESSORS) for p in unet.attn_processors.values())


def _ip_processors(unet: UNet2DConditionModel) -> dict[str, Any]:
    return {n: p for n, p in unet.attn_processors.items() if isinstance(p, _IP_PROCESSORS)}


def _cross_attentions(unet: UNet2DConditionModel) -> list[Any]:
    """The UNet's cross-attention layers, in the order IP-Adapter numbers them (1, 3, 5...)."""
    modules = dict(unet.named_modules())
    return [
        modules[name.removesuffix('.processor')]
        for name in unet.attn_processors
        if not name.endswith('attn1.processor')
    ]


def fresh_ip_adapter(
    unet: UNet2DConditionModel, image_embed_dim: int, seed: int = 0
) -> dict[str, dict[str, Tensor]]:
    """An untrained IP-Adapter for ``unet``, in the layout ``load_ip_adapter`` takes.

    Args:
        unet: the UNet it steers.
        image_embed_dim: the CLIP image embedding's size (``projection_dim``).
        seed: initialisation seed of the projection (the global stream is left alone).

    Returns:
        ``{'image_proj': {'proj.weight', ...}, 'ip_adapter': {'1.to_k_ip.weight', ...}}``,
        the image keys and values copied from each cross-attention's text ones.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        projection = ImageProjection(
            image_embed_dim=image_embed_dim,
            cross_attention_dim=unet.config.cross_attention_dim,
            num_image_text_embeds=REFERENCE_TOKENS,
        )
    image_proj = {
        key.replace('image_embeds', 'proj'): value for key, value in projection.state_dict().items()
    }
    ip_adapter = {}
    for index, attention in enumerate(_cross_attentions(unet)):
        key_id = 2 * index + 1  # IP-Adapter counts self- and cross-attention layers
        ip_adapter[f'{key_id}.to_k_ip.weight'] = attention.to_k.weight.detach().clone()
        ip_adapter[f'{key_id}.to_v_ip.weight'] = attention.to_v.weight.detach().clone()
    return {'image_proj': image_proj, 'ip_adapter': ip_adapter}


def add_global_content(
    pipeline: Any,
    image_encoder: CLIPVisionModelWithProjection | None,
    state: dict[str, dict[str, Tensor]] | None = None,
    seed: int = 0,
) -> None:
    """Give a pipeline's UNet an IP-Adapter (diffusers' ``load_ip_adapter``) and its encoder.

    Args:
        pipeline: a diffusers pipeline with ``IPAdapterMixin`` (its UNet is changed in place).
        image_encoder: the CLIP vision model, registered as the pipeline's ``image_encoder``
            (None: the pipeline takes reference embeddings only).
        state: the adapter's weights (default: :func:`fresh_ip_adapter`).
        seed: initialisation seed of a fresh adapter.

    Raises:
        ValueError: if ``state`` is None and there is no ``image_encoder`` to size it.
    """
    if state is None:
        if image_encoder is None:
            raise ValueError('a fresh IP-Adapter needs the image encoder (its projection_dim)')
        state = fresh_ip_adapter(pipeline.unet, image_encoder.config.projection_dim, seed)
    if image_encoder is not None:
        pipeline.register_modules(image_encoder=image_encoder)
    pipeline.load_ip_adapter(
        state, subfolder='', weight_name='', image_encoder_folder=None, low_cpu_mem_usage=False
    )


def load_global_content(
    pipeline: Any, folder: str | Path, encoder_source: str | Path = REFERENCE_ENCODER_ID
) -> None:
    """Load ``folder``'s ``ip_adapter.safetensors`` into the pipeline with its encoder.

    The CLIP vision model is ``folder/image_encoder`` when saved there (as
    ``load_ip_adapter`` reads it), else ``encoder_source`` (hub id or folder).
    """
    folder = Path(folder)
    if not (folder / IMAGE_ENCODER_FOLDER / 'config.json').exists():
        encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder_source))
        pipeline.register_modules(image_encoder=encoder.to(pipeline.unet.device))
    pipeline.load_ip_adapter(
        str(folder), subfolder='', weight_name=IP_ADAPTER_WEIGHTS, low_cpu_mem_usage=False
    )


def ip_adapter_modules(unet: UNet2DConditionModel) -> nn.ModuleList:
    """What an IP-Adapter trains: the image projection and each layer's image keys/values."""
    return nn.ModuleList([unet.encoder_hid_proj, *_ip_processors(unet).values()])


def save_ip_adapter(unet: UNet2DConditionModel, path: str | Path) -> None:
    """Write the UNet's IP-Adapter as diffusers' ``load_ip_adapter`` reads it (safetensors).

    Keys ``image_proj.proj.weight``, ``image_proj.norm.*`` and
    ``ip_adapter.<id>.to_k_ip.weight``/``to_v_ip.weight`` (``<id>`` = 1, 3, 5... per
    cross-attention layer), as the released IP-Adapter files.
    """
    (projection,) = unet.encoder_hid_proj.image_projection_layers
    tensors = {
        f'image_proj.{key.replace("image_embeds", "proj")}': value
        for key, value in projection.state_dict().items()
    }
    for index, processor in enumerate(_ip_processors(unet).values()):
        for which in ('to_k_ip', 'to_v_ip'):
            weight = getattr(processor, which)[0].weight
            tensors[f'ip_adapter.{2 * index + 1}.{which}.weight'] = weight
    save_file({k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}, str(path))


@contextmanager
def without_ip_adapter(unet: UNet2DConditionModel) -> Iterator[None]:
    """The UNet without its IP-Adapter in this block (e.g. to save it as a plain UNet)."""
    processors = unet.attn_processors
    projection = unet.encoder_hid_proj
    plain = {
        name: AttnProcessor2_0() if isinstance(p, _IP_PROCESSORS) else p
        for name, p in processors.items()
    }
    unet.set_attn_processor(plain)
    unet.encoder_hid_proj = None
    try:
        yield
    finally:
        unet.set_attn_processor(processors)
        unet.encoder_hid_proj = projection


@contextmanager
def ip_adapter_scale(unet: UNet2DConditionModel, scale: float) -> Iterator[None]:
    """The IP-Adapter's scale in this block (0 skips the image branch), restored after."""
    processors = list(_ip_processors(unet).values())
    saved = [list(p.scale) for p in processors]
    for processor in processors:
        processor.scale = [float(scale)] * len(processor.scale)
    try:
        yield
    finally:
        for processor, scales in zip(processors, saved, strict=True):
            processor.scale = scales


def encode_reference(image_encoder: CLIPVisionModelWithProjection, images: Tensor) -> Tensor:
    """CLIP image embeddings of reference images, preprocessed as CLIP's image processor.

    Args:
        image_encoder: the CLIP vision model.
        images: float [B, 3, H, W] in 0..255.

    Returns:
        float [B, projection_dim] on the images' device.
    """
    size = int(image_encoder.config.image_size)
    pixels = images.float() / 255
    scale = size / min(pixels.shape[-2:])
    height, width = (max(size, round(side * scale)) for side in pixels.shape[-2:])
    pixels = F.interpolate(pixels, (height, width), mode='bicubic', antialias=True)
    top, left = (height - size) // 2, (width - size) // 2
    pixels = pixels[..., top : top + size, left : left + size].clamp(0, 1)
    mean = pixels.new_tensor(OPENAI_CLIP_MEAN)[:, None, None]
    std = pixels.new_tensor(OPENAI_CLIP_STD)[:, None, None]
    parameter = next(image_encoder.parameters())
    pixels = ((pixels - mean) / std).to(parameter.device, parameter.dtype)
    embeds: Tensor = image_encoder(pixel_values=pixels).image_embeds
    return embeds.to(images.device, torch.float32)
