# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The one place TorchGeo task, datamodule and dataset-utility names are imported from."""

from collections.abc import Mapping
from importlib.metadata import version
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, Final

from lightning.pytorch import Trainer
from torch import Tensor
from torchgeo.datamodules import BaseDataModule, NonGeoDataModule, VHR10DataModule
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset

#: Whether TorchGeo has 0.10's ``torchgeo.tasks`` (else the ``torchgeo.trainers`` of 0.8/0.9).
HAS_TASKS_MODULE: Final[bool] = find_spec('torchgeo.tasks') is not None

# TorchGeo 0.10 renamed ``torchgeo.trainers`` to ``torchgeo.tasks`` and dropped the ``Task``
# suffix; its ``torchgeo.trainers`` classes are deprecated subclasses (until 1.0) that the
# 0.10 CLI's ``tasks.BaseTask`` accepts, but not the other way round, so import the new
# names where they exist. mypy checks against the 0.8 names (present in both).
if TYPE_CHECKING or not HAS_TASKS_MODULE:
    from torchgeo.trainers import (
        BaseTask,
        ChangeDetectionTask,
        ClassificationTask,
        ObjectDetectionTask,
        SemanticSegmentationTask,
    )
else:
    from torchgeo.tasks import BaseTask
    from torchgeo.tasks import ChangeDetection as ChangeDetectionTask
    from torchgeo.tasks import Classification as ClassificationTask
    from torchgeo.tasks import ObjectDetection as ObjectDetectionTask
    from torchgeo.tasks import SemanticSegmentation as SemanticSegmentationTask

#: The installed TorchGeo version (``torchgeo.__version__``).
TORCHGEO_VERSION: Final[str] = version('torchgeo')
#: Its (major, minor), for version-dependent behaviour.
TORCHGEO_VERSION_TUPLE: Final[tuple[int, int]] = (
    int(TORCHGEO_VERSION.split('.')[0]),
    int(TORCHGEO_VERSION.split('.')[1]),
)

#: The test metric of the change class's IoU in TorchGeo's change detection task: named after
#: torchmetrics' class in 0.8, micro-averaged ("Overall", for binary the same IoU) since 0.10.
CHANGE_IOU_METRIC: Final = (
    'test_OverallJaccardIndex' if TORCHGEO_VERSION_TUPLE >= (0, 10) else 'test_BinaryJaccardIndex'
)

#: The sample (and collated batch) keys of detection boxes, float [N, 4] ``x0 y0 x1 y1`` in
#: pixels, and their class indices, int64 [N]: the same in TorchGeo 0.8 and 0.10.
DETECTION_BOXES: Final = 'bbox_xyxy'
DETECTION_LABELS: Final = 'label'

#: The names TorchGeo's segmentation task logs its micro accuracy and IoU under (after the
#: ``train_``/``val_``/``test_`` prefix): 0.10's metric mixin renamed them (0.9 is untested).
SEGMENTATION_MICRO_METRICS: Final[tuple[str, str]] = (
    ('OverallAccuracy', 'OverallJaccardIndex')
    if HAS_TASKS_MODULE
    else ('MulticlassAccuracy', 'MulticlassJaccardIndex')
)


def batch_for_trainer(batch: Mapping[str, Any], trainer: Trainer | None) -> dict[str, Any]:
    """The batch as the trainer's module takes it: tensors only for TorchGeo's own tasks.

    TorchGeo's classification and segmentation tasks never read text fields, and from 0.10 on
    their validation plot stacks every value of the batch (``unbind_samples``), so strings such
    as ``prompt`` would fail there. Our own modules get the batch unchanged.

    Args:
        batch: a collated batch.
        trainer: the datamodule's trainer, if attached.

    Returns:
        The batch, without its non-tensor values when a TorchGeo task trains on it.
    """
    module = trainer.lightning_module if trainer is not None else None
    if isinstance(module, ClassificationTask | SemanticSegmentationTask):
        return {key: value for key, value in batch.items() if isinstance(value, Tensor)}
    return dict(batch)


__all__ = (
    'CHANGE_IOU_METRIC',
    'DETECTION_BOXES',
    'DETECTION_LABELS',
    'HAS_TASKS_MODULE',
    'SEGMENTATION_MICRO_METRICS',
    'TORCHGEO_VERSION',
    'TORCHGEO_VERSION_TUPLE',
    'BaseDataModule',
    'BaseTask',
    'ChangeDetectionTask',
    'ClassificationTask',
    'DatasetNotFoundError',
    'NonGeoDataModule',
    'NonGeoDataset',
    'ObjectDetectionTask',
    'SemanticSegmentationTask',
    'VHR10DataModule',
    'batch_for_trainer',
)
