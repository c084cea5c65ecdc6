# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The multi-condition family (CRS-Diff's local conditions) as a task: one ControlNet per map."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, ModelMixin
from torch import Tensor

from ..controls import CONTROLS, ControlExtractor
from ..models import (
    EARTHSYNTH_SUBFOLDER,
    MULTICONTROL_CONFIG,
    NamedMultiControlNet,
    tiny_multicontrol,
)
from .diffusion_networks import DiffusionNetworks
from .earthsynth_controlnet import _EMBEDDING_CHANNELS, EarthSynthControlNet

__all__ = ('MultiControlNetTask',)


class MultiControlNetTask(EarthSynthControlNet):
    """Train one ControlNet per named control map (a :class:`NamedMultiControlNet`).

    The maps are extracted on the fly from each batch by
    :class:`~torchgeo_earthsynth.controls.ControlExtractor` (``seg`` and ``road`` from the
    class mask, ``edges``, ``soft_edges`` and ``sketch`` from the real image, ``depth`` from a
    ``dem``). Each map is dropped per sample with probability ``control_dropout``: its
    ControlNet's residuals are scaled by 0, exactly what leaving the map out of a request
    does at inference (that ControlNet does not run), so any subset of the maps works. A map
    whose source the batch lacks is dropped for the whole batch. Validation grids and
    :meth:`predict_step` generate from every map the batch gives; the export (full
    pipeline with ``controlnet/multicontrol.json``) loads with ``Synthesizer.from_pretrained``.

    The training science is :class:`EarthSynthControlNet`'s (through
    :class:`~.diffusion_task.DiffusionTask`); ``condition_encoding`` is unused (``seg``
    is drawn in palette colours).

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        controls: Sequence[str] = ('seg', 'edges'),
        control_dropout: float = 0.3,
        **kwargs: Any,
    ) -> None:
        """Initialize a new MultiControlNetTask instance.

        Args:
            controls: the control maps, names from
                :data:`~torchgeo_earthsynth.controls.CONTROL_NAMES`, in the order they apply.
            control_dropout: probability each map is dropped for a training sample.
            **kwargs: :class:`EarthSynthControlNet`'s arguments; ``controlnet`` names a
                saved :class:`NamedMultiControlNet` (a folder with ``multicontrol.json``, or
                an export with it under ``controlnet/``) taking the same controls.

        Raises:
            ValueError: for an unknown or repeated control, none at all, or
                ``control_dropout`` not in [0, 1].
        """
        if not 0 <= control_dropout <= 1:
            raise ValueError(f'control_dropout must be in [0, 1], got {control_dropout}')
        if not controls or len(set(controls)) != len(controls):
            raise ValueError(f'controls must name each map once, got {list(controls)}')
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ models
    def configure_condition_models(self) -> None:
        """Load the saved multi-condition ControlNet, or one ControlNet per map from the UNet.

        Raises:
            ValueError: if ``controlnet`` is not a saved multi-condition ControlNet with
                exactly this task's controls.
        """
        hp = self.hparams
        self.extractor = ControlExtractor(hp['controls'])  # raises for unknown names
        names = self.extractor.names
        channels = {name: CONTROLS[name].channels for name in names}
        if hp['controlnet']:
            folder = Path(hp['controlnet']) / (hp['controlnet_subfolder'] or '')
            if not (folder / MULTICONTROL_CONFIG).exists():  # an export: under controlnet/
                folder = folder / EARTHSYNTH_SUBFOLDER
            if not (folder / MULTICONTROL_CONFIG).exists():
                raise ValueError(
                    f'controlnet {hp["controlnet"]!r}: expected a saved multi-condition '
                    f'ControlNet ({MULTICONTROL_CONFIG} in the folder or its controlnet/)'
                )
            self.controlnet: NamedMultiControlNet = NamedMultiControlNet.from_pretrained(folder)
            if self.controlnet.names != names:
                raise ValueError(
                    f'controlnet {str(folder)!r} takes controls {list(self.controlnet.names)}, '
                    f'this task {list(names)}'
                )
        elif hp['preset'] == 'tiny':
            self.controlnet = tiny_multicontrol(self.unet, channels, self.tiny_vae_downscale)
        else:
            levels = len(self.vae.config.block_out_channels)
            self.controlnet = NamedMultiControlNet(
                {
                    name: ControlNetModel.from_unet(
                        self.unet,
                        conditioning_embedding_out_channels=_EMBEDDING_CHANNELS[:levels],
                        conditioning_channels=count,
                    )
                    for name, count in channels.items()
                }
            )

    def trained_modules(self) -> list[ModelMixin]:
        """Each map's ControlNet (each checkpoints its gradients), and the UNet if trained."""
        return [*self.controlnet.nets, *DiffusionNetworks.trained_modules(self)]

    # ------------------------------------------------------------------ loss
    def forward(
        self,
        noisy: Tensor,
        timesteps: Tensor,
        text: Tensor,
        condition: Tensor | None = None,
        control_scales: Tensor | None = None,
        **controls: Tensor,
    ) -> Tensor:
        """Predict noise (or v) given text embeddings and every control map.

        Args:
            noisy: noisy latents [B, C, h, w].
            timesteps: [B] diffusion steps.
            text: text embeddings [B, T, D].
            condition: not taken (the maps are named, in ``controls``).
            control_scales: [B, N] per-sample scale of each map (0 drops it; default 1).
            **controls: ``{name: float [B, C, H, W]}``, one per control.

        Returns:
            The prediction, shaped as ``noisy``.

        Raises:
            ValueError: for a ``condition`` or a missing control map.
        """
        if condition is not None:
            raise ValueError(f'{type(self).__name__} takes named control maps, not a condition')
        names = self.controlnet.names
        missing = [name for name in names if name not in controls]
        if missing:
            raise ValueError(f'{type(self).__name__} needs control maps {missing}')
        if control_scales is None:
            control_scales = noisy.new_ones(len(noisy), len(names))
        down, mid = self.controlnet(
            noisy,
            timesteps,
            encoder_hidden_states=text,
            controlnet_cond=[controls[name] for name in names],
            # a [B, 1, 1, 1] scale per map: ControlNetModel multiplies its residuals by it
            conditioning_scale=list(control_scales.T[..., None, None, None]),
            return_dict=False,
        )
        return self.controlled_unet(noisy, timesteps, text, down, mid)

    def condition_inputs(self, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, Tensor]:
        """Every control map of the batch and the per-sample scales (maps dropped in training).

        A map whose source key the batch lacks is zeros with scale 0 (dropped).
        """
        extracted = self.extractor(batch)
        count = len(batch['image'])
        device = batch['image'].device
        keep = torch.ones(count, len(self.extractor.names), device=device)
        if self.training and self.hparams['control_dropout'] > 0:
            keep = (
                torch.rand(keep.shape, device=device) >= self.hparams['control_dropout']
            ).float()
        maps = {}
        for i, name in enumerate(self.extractor.names):
            if name not in extracted:
                keep[:, i] = 0
            maps[name] = extracted.get(name, torch.zeros(count, CONTROLS[name].channels, *size))
        return {**{name: m.to(device) for name, m in maps.items()}, 'control_scales': keep}

    def generation_inputs(self, batch: dict[str, Any], count: int) -> dict[str, Any]:
        """The control maps the batch's first ``count`` rows give (any subset)."""
        rows = {key: value[:count] for key, value in batch.items() if torch.is_tensor(value)}
        return {'controls': self.extractor(rows)}

    # ------------------------------------------------------------------ export
    def export_metadata(self) -> dict[str, Any]:
        """The controls, in order, and the base fields (no mask encoding: ``seg`` is palette)."""
        meta = super().export_metadata()
        del meta['condition_encoding']
        return {'controls': list(self.controlnet.names), **meta}

    def model_card(self, meta: dict[str, Any], full_pipeline: bool) -> str:
        """A model card that says which maps the export takes and how to load it."""
        base = '' if full_pipeline else f", base='{meta['base_model']}'"
        return (
            '---\nlibrary_name: diffusers\ntags: [controlnet, remote-sensing, crs-diff]\n---\n'
            '# Multi-condition ControlNet (torchgeo-earthsynth export)\n\n'
            f'- preset: `{meta["preset"]}`, trained steps: {meta["global_step"]}, '
            f'EMA: {meta["ema"]}\n'
            f'- controls (one diffusers ControlNet each, `controlnet/<name>/`): '
            f'{", ".join(meta["controls"])}; any subset, per-map scales\n'
            f'- prompt: `{meta["prompt_template"]}`\n\n'
            '```python\nfrom torchgeo_earthsynth.controls import ControlExtractor\n'
            'from torchgeo_earthsynth.synthesis import Synthesizer\n'
            f"synth = Synthesizer.from_pretrained('<this folder>'{base})\n"
            f'controls = ControlExtractor({meta["controls"]!r})(batch)\n'
            'images = synth.generate(None, prompts, controls=controls)\n```\n'
        )
