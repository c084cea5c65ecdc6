# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Synthesis: one sampling core (batching, seeds, prompt cache, guidance) over every family."""

from torchgeo_earthsynth.synthesis.guidance_cutoff import (
    GuidanceCutoff,
    cutoff_call,
)
from torchgeo_earthsynth.synthesis.loading import (
    Pipeline,
    pretrained_pipeline,
    tiny_pipeline,
)
from torchgeo_earthsynth.synthesis.parts import (
    SCHEDULERS,
    Family,
    SchedulerName,
    build_pipeline,
    build_text_pipeline,
    check_compatible,
)
from torchgeo_earthsynth.synthesis.requests import (
    check_request,
    normalised_metadata,
    request_size,
)
from torchgeo_earthsynth.synthesis.synthesizer import (
    ConditionEncoding,
    Synthesizer,
    encode_condition,
)

__all__ = (
    'SCHEDULERS',
    'ConditionEncoding',
    'Family',
    'GuidanceCutoff',
    'Pipeline',
    'SchedulerName',
    'Synthesizer',
    'build_pipeline',
    'build_text_pipeline',
    'check_compatible',
    'check_request',
    'cutoff_call',
    'encode_condition',
    'normalised_metadata',
    'pretrained_pipeline',
    'request_size',
    'tiny_pipeline',
)
