# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DiffusionTask's networks: built, frozen, EMA-averaged, checkpointed and exported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import torch
from diffusers import ModelMixin
from diffusers.training_utils import EMAModel
from torch import Tensor

from torchgeo_earthsynth.atomic import atomic_directory, pid_temporary
from torchgeo_earthsynth.compat import BaseTask
from torchgeo_earthsynth.models import DiffusionParts, PromptEncoder, pretrained_parts, tiny_parts

from .resume import (
    clean_stale_temporaries,
    rng_states,
    run_seed,
)

__all__ = ('DiffusionNetworks',)


class DiffusionNetworks(BaseTask):
    """The networks of a :class:`~.diffusion_task.DiffusionTask` and how they are stored.

    Builds the Stable Diffusion parts and the family's conditioning networks, freezes what
    does not train, keeps the EMA of what does, leaves frozen pretrained weights out of
    checkpoints and writes diffusers exports. The training science (loss, steps, optimizer,
    sampling) and the hyperparameters are :class:`~.diffusion_task.DiffusionTask`'s.

    .. versionadded:: 0.2
    """

    latent_scale: Tensor  # buffers: the VAE latent scale and its warm-up estimate
    latent_std_ema: Tensor
    ema: EMAModel | None

    # ------------------------------------------------------------------ models
    def configure_models(self) -> None:
        """Build or load the diffusion parts, the family's networks, and freeze the rest."""
        hp = self.hparams
        hp['seed'] = run_seed(hp['seed'])  # saved resolved: a resumed run keeps it
        parts = self.build_parts()
        self.unet, self.vae, self.text_encoder = parts.unet, parts.vae, parts.text_encoder
        self.tokenizer, self.noise_scheduler = parts.tokenizer, parts.scheduler
        self.train_unet = (
            hp['train_unet'] if hp['train_unet'] is not None else (hp['preset'] == 'tiny')
        )
        self.configure_condition_models()
        self.vae_trainable = hp['preset'] == 'tiny' and hp['vae_warmup_steps'] > 0
        self.vae.requires_grad_(self.vae_trainable)
        self.text_encoder.requires_grad_(False)
        self.unet.requires_grad_(False)
        for module in self.trained_modules():
            module.requires_grad_(True)
            if hp['gradient_checkpointing'] and isinstance(module, ModelMixin):
                module.enable_gradient_checkpointing()
        self.prompt_encoder = PromptEncoder(self.tokenizer, self.text_encoder, hp['prompt_cache'])
        self.register_buffer('latent_scale', torch.tensor(float(self.vae.config.scaling_factor)))
        self.register_buffer('latent_std_ema', torch.tensor(0.0))
        self._diffusion_stepped = False
        self._resumed_rng_states: dict[str, Any] | None = None
        self.ema = (
            EMAModel(self.trained_parameters(), decay=hp['ema_decay'])
            if (hp['ema_decay'] is not None)
            else None
        )
        # Frozen pretrained weights are not written into checkpoints (see on_save_checkpoint).
        self.strict_loading = hp['preset'] == 'tiny'
        self.train(self.training)  # frozen parts in eval mode from the start

    def build_parts(self) -> DiffusionParts:
        """The Stable Diffusion parts: tiny ones built in code, or the ``base_model``'s."""
        hp = self.hparams
        if hp['preset'] == 'tiny':
            return tiny_parts(
                hp['seed'],
                hp['image_size'],
                hp['prediction_type'] or 'epsilon',
                self.tiny_vae_downscale,
                *self.tiny_vae_size,
            )
        return pretrained_parts(hp['base_model'], hp['prediction_type'])

    @property
    def tiny_vae_downscale(self) -> int:
        """The tiny preset VAE's downscale factor (2 in families that do not offer the option)."""
        return int(self.hparams.get('tiny_vae_downscale', 2))

    @property
    def tiny_vae_size(self) -> tuple[int, int]:
        """The tiny preset VAE's first-block width and ResNet layers per block (16 and 1)."""
        hp = self.hparams
        return int(hp.get('tiny_vae_width', 16)), int(hp.get('tiny_vae_layers', 1))

    def configure_condition_models(self) -> None:
        """Build the family's conditioning networks (none here)."""

    def trained_modules(self) -> list[torch.nn.Module]:
        """The networks the optimizer and the EMA update (the UNet if ``train_unet``)."""
        return [self.unet] if self.train_unet else []

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """The diffusion parameters the optimizer updates (each once: modules may share some)."""
        unique = {id(p): p for module in self.trained_modules() for p in module.parameters()}
        return list(unique.values())

    def frozen_modules(self) -> list[torch.nn.Module]:
        """The networks nothing trains: the text encoder, the VAE and UNet unless trained."""
        frozen: list[torch.nn.Module] = [self.text_encoder]
        frozen += [] if self.vae_trainable else [self.vae]
        return frozen + ([] if self.train_unet else [self.unet])

    def cast_frozen_for_precision(self, precision: str) -> None:
        """Keep a pretrained base's frozen networks in bfloat16 under ``bf16-mixed``.

        As diffusers' training scripts do (``weight_dtype``): half their memory, and autocast
        no longer copies their float32 weights to bfloat16 at every step (for SD 1.5's frozen
        UNet, 1.7 GB a step). The trained networks stay float32. The tiny preset keeps float32
        (its frozen parts are checkpointed and exported).

        Args:
            precision: the Trainer's precision, e.g. ``bf16-mixed``.
        """
        if precision == 'bf16-mixed' and self.hparams['preset'] != 'tiny':
            for module in self.frozen_modules():
                module.to(torch.bfloat16)

    def _freeze_vae(self) -> None:
        """End of the VAE warm-up: the VAE is frozen from here on."""
        self.vae_trainable = False
        self.vae.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Self:
        """Set train mode, keeping frozen parts in eval mode."""
        super().train(mode)
        self.text_encoder.eval()
        if not self.vae_trainable:
            self.vae.eval()
        if not self.train_unet:
            self.unet.eval()
        return self

    @property
    def parts(self) -> DiffusionParts:
        """The Stable Diffusion parts (shared, not copied), VAE scale in sync."""
        self.vae.register_to_config(scaling_factor=float(self.latent_scale))
        return DiffusionParts(
            self.unet, self.vae, self.text_encoder, self.tokenizer, self.noise_scheduler
        )

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """Temporarily swap the EMA weights in (no-op without EMA)."""
        if self.ema is None:
            yield
            return
        params = self.trained_parameters()
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    # ------------------------------------------------------------------ checkpoints
    def _frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the frozen pretrained weights (reloaded from the base)."""
        if self.hparams['preset'] == 'tiny':
            return ()
        return ('vae.', 'text_encoder.') + (() if self.train_unet else ('unet.',))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop frozen weights (they reload from ``base_model``); add EMA, random streams."""
        prefixes = self._frozen_prefixes()
        if prefixes:
            state = checkpoint['state_dict']
            # trained layers inside a frozen network (an IP-Adapter in the UNet) are kept
            trained = {id(p) for p in self.trained_parameters()}
            kept = {n for n, p in self.named_parameters(remove_duplicate=False) if id(p) in trained}
            for key in [k for k in state if k.startswith(prefixes) and k not in kept]:
                del state[key]
        if self.ema is not None:
            checkpoint['ema'] = self.ema.state_dict()
        checkpoint['rng_states'] = rng_states(self.trainer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the EMA, the VAE state of the warm-up and (at train start) the streams."""
        if self.ema is not None and 'ema' in checkpoint:
            self.ema.load_state_dict(checkpoint['ema'])
        if (
            self.vae_trainable
            and checkpoint.get('global_step', 0) >= self.hparams['vae_warmup_steps']
        ):
            self._freeze_vae()
            # Saved at the end of the warm-up, before the step that fixes the scale (later
            # checkpoints hold the same value): fix it as that step would have.
            state = checkpoint['state_dict']
            if 'latent_std_ema' in state:
                state['latent_scale'] = 1.0 / state['latent_std_ema'].clamp(min=1e-3)
        self._resumed_rng_states = checkpoint.get('rng_states')

    # ------------------------------------------------------------------ export
    def write_export(self, directory: Path, full_pipeline: bool) -> None:
        """Write the trained weights (EMA swapped in) in diffusers format into ``directory``.

        Raises:
            NotImplementedError: in the base; each family writes its own networks.
        """
        raise NotImplementedError(f'{type(self).__name__} does not define an export')

    def export_metadata(self) -> dict[str, Any]:
        """What ``earthsynth.json`` records about the export (base fields here)."""
        return {
            'base_model': self.hparams['base_model'] if self.hparams['preset'] != 'tiny' else None,
            'preset': self.hparams['preset'],
            'image_size': self.hparams['image_size'],
            'global_step': int(self.global_step),
            'ema': self.ema is not None,
        }

    def model_card(self, meta: dict[str, Any], full_pipeline: bool) -> str:
        """The export's README.md."""
        return f'# {type(self).__name__} export\n\n```json\n{json.dumps(meta, indent=2)}\n```\n'

    def save_pretrained(self, directory: str | Path, full_pipeline: bool | None = None) -> Path:
        """Export in diffusers format (safetensors), atomically, with a model card.

        Args:
            directory: output folder (replaced as a whole when it exists).
            full_pipeline: write the whole pipeline (default for the tiny preset: the base
                exists nowhere else) or only the trained networks.

        Returns:
            The export folder.
        """
        directory = Path(directory)
        full = self.hparams['preset'] == 'tiny' if full_pipeline is None else full_pipeline
        clean_stale_temporaries(directory.parent)  # of exports killed before their rename
        with atomic_directory(directory, pid_temporary(directory)) as tmp:
            with self.ema_weights():
                self.write_export(tmp, full)
            meta = self.export_metadata()
            (tmp / 'earthsynth.json').write_text(json.dumps(meta, indent=2))
            (tmp / 'README.md').write_text(self.model_card(meta, full))
        return directory
