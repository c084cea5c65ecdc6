# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Generator families as plug-ins: what each needs, accepts and adds to a pipeline call.

One module per family registers its :class:`~torchgeo_earthsynth.families.base.
GeneratorFamily` (``@register``); the import order below is the order in which they add
their inputs to a call. A new family is one new module and one import here.
"""

# isort: off
from torchgeo_earthsynth.families.base import (
    CONDITIONS,
    FAMILIES,
    SETTINGS,
    BatchCall,
    GeneratorFamily,
    bind_families,
    check_conditions,
    register,
    stack_for_guidance,
)
from torchgeo_earthsynth.families.pipelines import (
    build_pipeline,
    build_text_pipeline,
)
from torchgeo_earthsynth.families.earthsynth import (
    MaskControlNetFamily,
)
from torchgeo_earthsynth.families.multispectral import MultispectralFamily
from torchgeo_earthsynth.families.superres import (
    SuperResolutionFamily,
    condition_size,
    is_super_resolution_export,
    low_res_pipeline,
)
from torchgeo_earthsynth.families.temporal import (
    TemporalFamily,
    is_temporal_export,
    normalize_frame_metadata,
    temporal_pipeline,
)
from torchgeo_earthsynth.families.diffusionsat import (
    LOW_RES_GSD,
    MetadataFamily,
    metadata_controlnets,
)
from torchgeo_earthsynth.families.text2earth import (
    ResolutionLevelFamily,
)
from torchgeo_earthsynth.families.inpainting import (
    SEAM,
    InpaintingFamily,
    check_inpainting,
    class_region,
    composite,
    inpainting_call,
    inpainting_pipeline,
    outpaint_canvas,
)
from torchgeo_earthsynth.families.multicontrol import (
    MultiControlFamily,
    check_controls,
    controlled_pipeline,
    controls_from_masks,
    controls_size,
    multicontrol_of,
)
from torchgeo_earthsynth.families.reference import (
    GlobalContentFamily,
    reference_embeddings,
)
# isort: on

__all__ = (
    'CONDITIONS',
    'FAMILIES',
    'LOW_RES_GSD',
    'SEAM',
    'SETTINGS',
    'BatchCall',
    'GeneratorFamily',
    'GlobalContentFamily',
    'InpaintingFamily',
    'MaskControlNetFamily',
    'MetadataFamily',
    'MultiControlFamily',
    'MultispectralFamily',
    'ResolutionLevelFamily',
    'SuperResolutionFamily',
    'TemporalFamily',
    'bind_families',
    'build_pipeline',
    'build_text_pipeline',
    'check_conditions',
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
    'is_temporal_export',
    'low_res_pipeline',
    'metadata_controlnets',
    'multicontrol_of',
    'normalize_frame_metadata',
    'outpaint_canvas',
    'reference_embeddings',
    'register',
    'stack_for_guidance',
    'temporal_pipeline',
)
