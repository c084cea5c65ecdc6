# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Diffusers components: tiny configs built in code, offline CLIP tokenizer, SD loaders."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDPMScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

#: Base model of the paper and the released EarthSynth ControlNet (DESIGN.md).
SD15_ID: Final = 'stable-diffusion-v1-5/stable-diffusion-v1-5'
EARTHSYNTH_ID: Final = 'jaychempan/EarthSynth'
EARTHSYNTH_SUBFOLDER: Final = 'controlnet'

TINY_TEXT_DIM: Final = 32


@dataclass
class DiffusionParts:
    """The Stable Diffusion parts a ControlNet pipeline needs."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDPMScheduler


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map."""
    printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
                 + list(range(ord('®'), ord('ÿ') + 1)))  # fmt: skip
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _tokenizer_dir() -> Path:
    from .datasets.mini import default_cache_dir

    return default_cache_dir() / 'clip-tokenizer'


@lru_cache(maxsize=1)
def clip_tokenizer(directory: str | None = None) -> CLIPTokenizer:
    """The SD 1.5 CLIP tokenizer, rebuilt offline from open_clip's bundled BPE vocabulary.

    Token ids equal open_clip's and the real SD 1.5 tokenizer's (vocab 49408, bos 49406,
    eos = pad 49407, 77 tokens).

    Args:
        directory: where to write ``vocab.json``/``merges.txt`` (default: the cache folder).

    Returns:
        A ``transformers.CLIPTokenizer``.
    """
    import open_clip.tokenizer

    out = Path(directory) if directory else _tokenizer_dir()
    if not (out / 'merges.txt').exists():
        with gzip.open(open_clip.tokenizer.default_bpe(), 'rt', encoding='utf-8') as f:
            merges = f.read().split('\n')[1 : 49152 - 256 - 2 + 1]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + '</w>' for c in byte_chars]
        vocab += [''.join(m.split()) for m in merges] + ['<|startoftext|>', '<|endoftext|>']
        out.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f'.{out.name}.{os.getpid()}')
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / 'vocab.json').write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        (tmp / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(merges) + '\n')
        for name in ('vocab.json', 'merges.txt'):
            os.replace(tmp / name, out / name)
        tmp.rmdir()
    return CLIPTokenizer.from_pretrained(str(out), model_max_length=77, pad_token='<|endoftext|>')


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    """A 2-layer CLIP text model with SD's vocabulary and special tokens."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=TINY_TEXT_DIM, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=TINY_TEXT_DIM,
    )  # fmt: skip
    return CLIPTextModel(config)


def tiny_unet(seed: int = 0, sample_size: int = 32) -> UNet2DConditionModel:
    """A two-level UNet with cross-attention at the lower level (latent 4 channels)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
        up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'), cross_attention_dim=TINY_TEXT_DIM,
        attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip


def tiny_vae(seed: int = 0, sample_size: int = 64) -> AutoencoderKL:
    """A two-block VAE: downscale factor 2, 4 latent channels."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=sample_size, scaling_factor=1.0,
    )  # fmt: skip


def sd_scheduler(prediction_type: str = 'epsilon') -> DDPMScheduler:
    """SD 1.5's training noise schedule."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule='scaled_linear', prediction_type=prediction_type, clip_sample=False,
    )  # fmt: skip


def tiny_parts(
    seed: int = 0, image_size: int = 64, prediction_type: str = 'epsilon'
) -> DiffusionParts:
    """Every Stable Diffusion part from small configs, built in code (nothing downloaded).

    Args:
        seed: initialisation seed.
        image_size: pixel size of the images (latents are half of it).
        prediction_type: ``epsilon`` or ``v_prediction``.

    Returns:
        The tiny parts.
    """
    return DiffusionParts(
        unet=tiny_unet(seed, image_size // 2),
        vae=tiny_vae(seed + 1, image_size),
        text_encoder=tiny_text_encoder(seed + 2),
        tokenizer=clip_tokenizer(),
        scheduler=sd_scheduler(prediction_type),
    )


def tiny_controlnet(unet: UNet2DConditionModel) -> ControlNetModel:
    """A ControlNet copied from a tiny UNet (condition embedding matches the 2x VAE)."""
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))


def pretrained_parts(
    base: str | Path = SD15_ID, prediction_type: str | None = None, revision: str | None = None
) -> DiffusionParts:
    """Stable Diffusion parts from a hub id or a local diffusers folder.

    Args:
        base: hub id (e.g. SD 1.5) or local folder in diffusers layout.
        prediction_type: override the scheduler's prediction type.
        revision: hub revision.

    Returns:
        The pretrained parts.
    """
    base = str(base)
    kwargs = {'revision': revision} if revision else {}
    scheduler = DDPMScheduler.from_pretrained(base, subfolder='scheduler', **kwargs)
    if prediction_type is not None:
        scheduler = DDPMScheduler.from_config(scheduler.config, prediction_type=prediction_type)
    return DiffusionParts(
        unet=UNet2DConditionModel.from_pretrained(base, subfolder='unet', **kwargs),
        vae=AutoencoderKL.from_pretrained(base, subfolder='vae', **kwargs),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder='text_encoder', **kwargs),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder='tokenizer', **kwargs),
        scheduler=scheduler,
    )


def load_controlnet(source: str | Path, subfolder: str | None = None) -> ControlNetModel:
    """A ControlNet from a hub id (e.g. ``jaychempan/EarthSynth``) or a local export.

    Args:
        source: hub id or folder in diffusers format.
        subfolder: e.g. ``controlnet`` for the released EarthSynth weights.

    Returns:
        The ControlNet.

    Raises:
        ValueError: if the folder is not a diffusers ControlNet.
    """
    path = Path(source) / (subfolder or '')
    if Path(source).exists() and not (path / 'config.json').exists():
        raise ValueError(f'{path}: no config.json; expected a diffusers ControlNet export '
                         '(save_pretrained folder)')  # fmt: skip
    kwargs = {'subfolder': subfolder} if subfolder else {}
    return ControlNetModel.from_pretrained(str(source), **kwargs)


class PromptEncoder:
    """Text encoder front-end with an LRU prompt-embedding cache.

    The vocabulary is finite, so prompts repeat: a prompt seen before is not encoded again.
    Misses of a batch are encoded together; results equal uncached encoding.

    Args:
        tokenizer: the CLIP tokenizer.
        text_encoder: the (frozen) CLIP text model.
        cache: keep embeddings of seen prompts.
        max_size: most prompts kept (least recently used dropped first).
    """

    def __init__(
        self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, cache: bool = True,
        max_size: int = 4096,
    ) -> None:  # fmt: skip
        from collections import OrderedDict

        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.cache_enabled = cache
        self.max_size = max_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts, padding='max_length', max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors='pt',
        ).input_ids.to(self.text_encoder.device)  # fmt: skip
        with torch.no_grad():
            out: torch.Tensor = self.text_encoder(ids)[0]
        return out

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings [B, 77, D] of the prompts, from the cache where possible."""
        if not self.cache_enabled:
            self.misses += len(prompts)
            return self._encode(list(prompts))
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            for prompt, embedding in zip(missing, self._encode(missing)):
                self._cache[prompt] = embedding
            while len(self._cache) > self.max_size:
                self._cache.popitem(last=False)
        self.misses += len(missing)
        self.hits += len(prompts) - len(missing)
        device = self.text_encoder.device
        out = []
        for prompt in prompts:
            self._cache.move_to_end(prompt)
            embedding = self._cache[prompt]
            if embedding.device != device:  # the model moved since it was cached
                embedding = self._cache[prompt] = embedding.to(device)
            out.append(embedding)
        return torch.stack(out)

    def clear(self) -> None:
        """Forget every cached embedding."""
        self._cache.clear()
