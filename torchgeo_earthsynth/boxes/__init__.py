# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Detection boxes as exact labels, and counterfactual box layouts."""

from torchgeo_earthsynth.boxes.recompose import (
    BoxRecomposer,
)
from torchgeo_earthsynth.boxes.records import (
    RECORD_BOXES,
    RECORD_CLASSES,
    box_masks,
    boxes_from_record,
    boxes_to_record,
    check_boxes,
    rasterize_instances,
    sample_boxes,
    scale_boxes,
)

__all__ = (
    'RECORD_BOXES',
    'RECORD_CLASSES',
    'BoxRecomposer',
    'box_masks',
    'boxes_from_record',
    'boxes_to_record',
    'check_boxes',
    'rasterize_instances',
    'sample_boxes',
    'scale_boxes',
)
