# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Geo-aware synthetic augmentation: each generated row gets its real sample's place and date."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rasterio.crs import CRS
from torch import Tensor

from torchgeo_earthsynth.geo import metadata_from_geo_sample

__all__ = ('GeoMetadata',)

_DATASET_ATTRIBUTES = ('train_dataset', 'dataset')


class GeoMetadata:
    """The metadata of a batch's rows, for a generator conditioned on metadata.

    From a batch's ``metadata`` (e.g. :class:`~torchgeo_earthsynth.datasets.EarthSynth180K`)
    or, on a TorchGeo ``GeoDataset``, its ``bounds`` and CRS
    (:func:`~torchgeo_earthsynth.geo.metadata_from_geo_sample`). TorchGeo 0.10 batches carry
    no CRS and samplers' bounds no resolution: they come from ``crs``/``res``, else from
    the datamodule's dataset (:meth:`fit_to`).

    Args:
        crs: the samples' CRS where the batch carries none.
        res: the samples' resolution (CRS units per pixel) where the bounds carry none.
        date: the acquisition date where the samples have none.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        crs: CRS | str | None = None,
        res: float | tuple[float, float] | None = None,
        date: datetime | None = None,
    ) -> None:
        self.crs = crs
        self.res = res
        self.date = date
        self.datamodule: Any = None

    def fit_to(self, datamodule: Any) -> None:
        """Take the CRS and resolution from ``datamodule``'s dataset when needed (after setup)."""
        self.datamodule = datamodule

    def _dataset_attribute(self, name: str) -> Any:
        for attribute in _DATASET_ATTRIBUTES:
            dataset = getattr(self.datamodule, attribute, None)
            if getattr(dataset, name, None) is not None:
                return getattr(dataset, name)
        return None

    def of_rows(self, batch: Mapping[str, Any], rows: Sequence[int]) -> Tensor | None:
        """Metadata float32 [len(rows), 7] in physical units, or None where the batch has none.

        Args:
            batch: a collated batch.
            rows: the rows to describe.

        Returns:
            The rows' metadata (NaN where unknown), or None.

        Raises:
            ValueError: if a GeoDataset batch has no CRS and none is known.
        """
        if 'metadata' in batch:
            metadata: Tensor = batch['metadata'][list(rows)].float()
            return metadata
        if 'bounds' not in batch:
            return None
        crs = self.crs if self.crs is not None else self._dataset_attribute('crs')
        res = self.res if self.res is not None else self._dataset_attribute('res')
        if res is not None and not isinstance(res, int | float):
            res = (float(res[0]), float(res[1]))
        every = metadata_from_geo_sample(batch, res=res, date=self.date, crs=crs)
        return every.reshape(-1, every.shape[-1])[list(rows)]

    def for_generator(
        self, synthesizer: Any, batch: Mapping[str, Any], rows: Sequence[int]
    ) -> Tensor | None:
        """The rows' metadata if ``synthesizer`` is conditioned on metadata, else None."""
        takes = getattr(synthesizer, 'takes', None)
        if takes is None or not takes('metadata'):
            return None
        return self.of_rows(batch, rows)
