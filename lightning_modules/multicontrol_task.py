# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The multi-condition family (CRS-Diff's local conditions) as a task: one ControlNet per map."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel
from torch import Tensor, nn

from torchgeo_earthsynth.controls import CONTROLS, ControlExtractor
from torchgeo_earthsynth.models import (
    EARTHSYNTH_SUBFOLDER,
    MULTICONTROL_CONFIG,
    REFERENCE_ENCODER_ID,
    DiffusionSatControlNet,
    NamedMultiControlNet,
    controlnet_metadata,
    tiny_multicontrol,
)

from .diffusion_networks import DiffusionNetworks
from .diffusionsat_task import training_metadata
from .earthsynth_controlnet import _EMBEDDING_CHANNELS
from .global_content import GlobalContentControlNet

__all__ = ('MultiControlNetTask',)


class MultiControlNetTask(GlobalContentControlNet):
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

    With ``global_content``, the UNet also takes a reference image's CLIP embedding as 4
    extra context tokens (CRS-Diff's global content condition, through diffusers'
    IP-Adapter: :mod:`~torchgeo_earthsynth.models.global_content`). It trains on the
    sample's own image as the reference (encoded by a frozen CLIP vision model), dropped
    per sample to a zero embedding with probability ``reference_dropout`` (the
    unconditional input of diffusers' pipelines); the image projection and the image
    keys/values train with the ControlNets. The export adds ``ip_adapter.safetensors``
    (and ``image_encoder/`` in a full pipeline), which ``Synthesizer.from_pretrained``
    loads: ``generate(..., reference=images, reference_scale=s)``.

    With ``metadata``, each ControlNet also takes the shared metadata condition
    (DiffusionSat's per-field embeddings: :class:`~torchgeo_earthsynth.models.
    DiffusionSatControlNet`, output layers zero-initialised), as
    :class:`~.metadata_controlnet.MetadataControlNet` does: batches carry ``metadata``
    float32 [B, 7] in physical units (NaN where unknown), each field dropped to 0 (its
    unconditional value) with probability ``metadata_dropout``; generation takes
    ``metadata=`` (absent: all unknown).

    The training science is :class:`EarthSynthControlNet`'s (through
    :class:`~.diffusion_task.DiffusionTask`); ``condition_encoding`` is unused (``seg``
    is drawn in palette colours).

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        controls: Sequence[str] = ('seg', 'edges'),
        control_dropout: float = 0.3,
        global_content: bool = False,
        reference_dropout: float = 0.1,
        reference_encoder: str = REFERENCE_ENCODER_ID,
        metadata: bool = False,
        metadata_dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        """Initialize a new MultiControlNetTask instance.

        Args:
            controls: the control maps, names from
                :data:`~torchgeo_earthsynth.controls.CONTROL_NAMES`, in the order they apply.
            control_dropout: probability each map is dropped for a training sample.
            global_content: also train an IP-Adapter on a reference image (the sample's own).
            reference_dropout: probability the reference is dropped for a training sample.
            reference_encoder: the CLIP vision model (hub id or folder) of the
                ``pretrained`` preset (the tiny preset builds a tiny one in code).
            metadata: each ControlNet also takes the batch's metadata.
            metadata_dropout: probability each metadata field is dropped to 0.
            **kwargs: :class:`EarthSynthControlNet`'s arguments; ``controlnet`` names a
                saved :class:`NamedMultiControlNet` (a folder with ``multicontrol.json``, or
                an export with it under ``controlnet/``) taking the same controls.

        Raises:
            ValueError: for an unknown or repeated control, none at all, or
                a dropout not in [0, 1].
        """
        dropouts = (
            ('control', control_dropout),
            ('reference', reference_dropout),
            ('metadata', metadata_dropout),
        )
        for name, value in dropouts:
            if not 0 <= value <= 1:
                raise ValueError(f'{name}_dropout must be in [0, 1], got {value}')
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
        if hp['metadata']:  # each map's ControlNet with metadata embeddings (zero output)
            self.controlnet = NamedMultiControlNet(
                {
                    name: net
                    if isinstance(net, DiffusionSatControlNet)
                    else DiffusionSatControlNet.from_controlnet(net)
                    for name, net in self.controlnet.by_name().items()
                }
            )
        self.configure_global_content()

    def trained_modules(self) -> list[nn.Module]:
        """Each map's ControlNet, the IP-Adapter (global content), and the UNet if trained."""
        nets = [*self.controlnet.nets, *self.adapter_modules()]
        return [*nets, *DiffusionNetworks.trained_modules(self)]

    # ------------------------------------------------------------------ loss
    def forward(
        self,
        noisy: Tensor,
        timesteps: Tensor,
        text: Tensor,
        condition: Tensor | None = None,
        control_scales: Tensor | None = None,
        reference: Tensor | None = None,
        metadata: Tensor | None = None,
        **controls: Tensor,
    ) -> Tensor:
        """Predict noise (or v) given text embeddings and every control map.

        Args:
            noisy: noisy latents [B, C, h, w].
            timesteps: [B] diffusion steps.
            text: text embeddings [B, T, D].
            condition: not taken (the maps are named, in ``controls``).
            control_scales: [B, N] per-sample scale of each map (0 drops it; default 1).
            reference: [B, D] CLIP image embeddings of the references (global content;
                default zeros, a dropped reference).
            metadata: [B, 7] normalised metadata for ControlNets that take it (None: no
                metadata term).
            **controls: ``{name: float [B, C, H, W]}``, one per control.

        Returns:
            The prediction, shaped as ``noisy``.

        Raises:
            ValueError: for a ``condition``, a missing control map, or a ``reference``
                without ``global_content``.
        """
        if condition is not None:
            raise ValueError(f'{type(self).__name__} takes named control maps, not a condition')
        names = self.controlnet.names
        missing = [name for name in names if name not in controls]
        if missing:
            raise ValueError(f'{type(self).__name__} needs control maps {missing}')
        if control_scales is None:
            control_scales = noisy.new_ones(len(noisy), len(names))
        with ExitStack() as stack:
            for net in self.controlnet.metadata_nets():
                stack.enter_context(controlnet_metadata(net, metadata, None))
            down, mid = self.controlnet(
                noisy,
                timesteps,
                encoder_hidden_states=text,
                controlnet_cond=[controls[name] for name in names],
                # a [B, 1, 1, 1] scale per map: ControlNetModel multiplies its residuals by it
                conditioning_scale=list(control_scales.T[..., None, None, None]),
                return_dict=False,
            )
        extra = self.reference_kwargs(reference, noisy)
        return self.controlled_unet(noisy, timesteps, text, down, mid, **extra)

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
        inputs = {**{name: m.to(device) for name, m in maps.items()}, 'control_scales': keep}
        if self.reference_encoder is not None:
            inputs['reference'] = self.reference_inputs(batch['image'])
        if self.hparams['metadata']:
            dropout = self.hparams['metadata_dropout'] if self.training else 0.0
            inputs['metadata'] = training_metadata(batch, dropout, type(self).__name__)
        return inputs

    def generation_inputs(self, batch: dict[str, Any], count: int) -> dict[str, Any]:
        """The control maps the batch's first ``count`` rows give (any subset)."""
        rows = {key: value[:count] for key, value in batch.items() if torch.is_tensor(value)}
        inputs: dict[str, Any] = {'controls': self.extractor(rows)}
        if self.reference_encoder is not None:  # the sample's own image, as in training
            inputs['reference'] = rows['image']
        if self.hparams['metadata'] and 'metadata' in rows:
            inputs['metadata'] = rows['metadata']
        return inputs

    # ------------------------------------------------------------------ export
    def export_metadata(self) -> dict[str, Any]:
        """The controls, in order, and the base fields (no mask encoding: ``seg`` is palette)."""
        meta = super().export_metadata()
        del meta['condition_encoding']
        return {'controls': list(self.controlnet.names), **meta}

    def model_card(self, meta: dict[str, Any], full_pipeline: bool) -> str:
        """A model card that says which maps the export takes and how to load it."""
        base = '' if full_pipeline else f", base='{meta['base_model']}'"
        reference = (
            '- global content: a reference image (IP-Adapter, `ip_adapter.safetensors`): '
            '`generate(..., reference=images, reference_scale=1.0)`\n'
            if meta.get('global_content')
            else ''
        )
        return (
            '---\nlibrary_name: diffusers\ntags: [controlnet, remote-sensing, crs-diff]\n---\n'
            '# Multi-condition ControlNet (torchgeo-earthsynth export)\n\n'
            f'- preset: `{meta["preset"]}`, trained steps: {meta["global_step"]}, '
            f'EMA: {meta["ema"]}\n'
            f'- controls (one diffusers ControlNet each, `controlnet/<name>/`): '
            f'{", ".join(meta["controls"])}; any subset, per-map scales\n'
            f'{reference}- prompt: `{meta["prompt_template"]}`\n\n'
            '```python\nfrom torchgeo_earthsynth.controls import ControlExtractor\n'
            'from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer\n'
            f"synth = Synthesizer.from_pretrained('<this folder>'{base})\n"
            f'controls = ControlExtractor({meta["controls"]!r})(batch)\n'
            'images = synth.generate(None, prompts, controls=controls)\n```\n'
        )
