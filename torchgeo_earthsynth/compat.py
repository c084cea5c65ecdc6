# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The one place TorchGeo task, datamodule and dataset-utility names are imported from."""

from importlib.metadata import version
from importlib.util import find_spec
from typing import TYPE_CHECKING, Final

from torchgeo.datamodules import BaseDataModule, NonGeoDataModule
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset

# TorchGeo 0.10 renamed ``torchgeo.trainers`` to ``torchgeo.tasks`` and dropped the ``Task``
# suffix; its ``torchgeo.trainers`` classes are deprecated subclasses (until 1.0) that the
# 0.10 CLI's ``tasks.BaseTask`` accepts, but not the other way round, so import the new
# names where they exist. mypy checks against the 0.8 names (present in both).
if TYPE_CHECKING or find_spec('torchgeo.tasks') is None:
    from torchgeo.trainers import BaseTask, ClassificationTask, SemanticSegmentationTask
else:
    from torchgeo.tasks import BaseTask
    from torchgeo.tasks import Classification as ClassificationTask
    from torchgeo.tasks import SemanticSegmentation as SemanticSegmentationTask

#: The installed TorchGeo version (``torchgeo.__version__``).
TORCHGEO_VERSION: Final[str] = version('torchgeo')

__all__ = (
    'TORCHGEO_VERSION',
    'BaseDataModule',
    'BaseTask',
    'ClassificationTask',
    'DatasetNotFoundError',
    'NonGeoDataModule',
    'NonGeoDataset',
    'SemanticSegmentationTask',
)
