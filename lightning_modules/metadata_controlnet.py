# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth's mask ControlNet that also takes DiffusionSat's metadata, as a task."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from torchgeo_earthsynth.models import DiffusionSatControlNet, controlnet_metadata

from .diffusionsat_task import training_metadata
from .earthsynth_controlnet import EarthSynthControlNet

__all__ = ('MetadataControlNet',)


class MetadataControlNet(EarthSynthControlNet):
    """Train a mask + prompt ControlNet that also takes metadata (place, GSD, date).

    :class:`EarthSynthControlNet` with DiffusionSat's per-field metadata embeddings in the
    ControlNet (:meth:`DiffusionSatControlNet.from_controlnet
    <torchgeo_earthsynth.models.DiffusionSatControlNet.from_controlnet>`, output layers
    zero-initialised, so a released EarthSynth ControlNet starts out generating as before).
    Batches carry ``metadata`` float32 [B, 7] in physical units, NaN where unknown,
    normalised as DiffusionSat's; each field is dropped to 0 (its unconditional value) with
    probability ``metadata_dropout``. Validation grids and :meth:`predict_step` generate
    for the batch's metadata. The export loads with ``Synthesizer.from_pretrained``.

    .. versionadded:: 0.2
    """

    def __init__(self, metadata_dropout: float = 0.1, **kwargs: Any) -> None:
        """Initialize a new MetadataControlNet instance.

        Args:
            metadata_dropout: probability each metadata field is dropped to 0.
            **kwargs: :class:`EarthSynthControlNet`'s arguments.

        Raises:
            ValueError: if ``metadata_dropout`` is not in [0, 1].
        """
        if not 0 <= metadata_dropout <= 1:
            raise ValueError(f'metadata_dropout must be in [0, 1], got {metadata_dropout}')
        super().__init__(**kwargs)

    def configure_condition_models(self) -> None:
        """The base's ControlNet, with metadata embeddings unless it has them already."""
        super().configure_condition_models()
        if not isinstance(self.controlnet, DiffusionSatControlNet):
            self.controlnet = DiffusionSatControlNet.from_controlnet(self.controlnet)

    def forward(
        self,
        noisy: Tensor,
        timesteps: Tensor,
        text: Tensor,
        condition: Tensor | None = None,
        metadata: Tensor | None = None,
        **conditions: Tensor,
    ) -> Tensor:
        """:meth:`EarthSynthControlNet.forward` with the normalised ``metadata`` [B, 7]."""
        assert isinstance(self.controlnet, DiffusionSatControlNet)
        with controlnet_metadata(self.controlnet, metadata, None):
            return super().forward(noisy, timesteps, text, condition, **conditions)

    def condition_inputs(self, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, Tensor]:
        """The mask's condition image and the normalised metadata (fields dropped in training).

        Raises:
            ValueError: if the batch has no ``metadata``.
        """
        dropout = self.hparams['metadata_dropout'] if self.training else 0.0
        metadata = training_metadata(batch, dropout, type(self).__name__)
        return {**super().condition_inputs(batch, size), 'metadata': metadata}

    def generation_inputs(self, batch: dict[str, Any], count: int) -> dict[str, Any]:
        """The batch's first ``count`` metadata rows (physical units) for generation."""
        metadata = batch.get('metadata')
        return {} if metadata is None else {'metadata': metadata[:count]}
