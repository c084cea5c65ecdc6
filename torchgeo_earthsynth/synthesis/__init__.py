# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Synthesis: one sampling core (batching, seeds, prompt cache, guidance) over every family."""

from torchgeo_earthsynth.conditions import ConditionEncoding, encode_condition
from torchgeo_earthsynth.families.pipelines import build_pipeline, build_text_pipeline
from torchgeo_earthsynth.synthesis.guidance_cutoff import GuidanceCutoff, cutoff_call
from torchgeo_earthsynth.synthesis.loading import Pipeline, pretrained_pipeline, tiny_pipeline
from torchgeo_earthsynth.synthesis.parts import SCHEDULERS, Family, SchedulerName, check_compatible
from torchgeo_earthsynth.synthesis.superres import super_resolve
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

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
    'cutoff_call',
    'encode_condition',
    'pretrained_pipeline',
    'super_resolve',
    'tiny_pipeline',
)
