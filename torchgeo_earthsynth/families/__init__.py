# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Generator families as plug-ins: what each needs, accepts and adds to a pipeline call."""

from torchgeo_earthsynth.families.inpainting import (
    SEAM,
    check_inpainting,
    class_region,
    composite,
    inpainting_call,
    inpainting_pipeline,
    outpaint_canvas,
)
from torchgeo_earthsynth.families.multicontrol import (
    check_controls,
    controlled_pipeline,
    controls_from_masks,
    controls_size,
    multicontrol_of,
)
from torchgeo_earthsynth.families.reference import (
    reference_embeddings,
    takes_reference,
)
from torchgeo_earthsynth.families.superres import (
    condition_size,
    is_super_resolution_export,
    low_res_pipeline,
    super_resolve,
)

__all__ = (
    'SEAM',
    'check_controls',
    'check_inpainting',
    'class_region',
    'composite',
    'condition_size',
    'controlled_pipeline',
    'controls_from_masks',
    'controls_size',
    'inpainting_call',
    'inpainting_pipeline',
    'is_super_resolution_export',
    'low_res_pipeline',
    'multicontrol_of',
    'outpaint_canvas',
    'reference_embeddings',
    'super_resolve',
    'takes_reference',
)
