# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""R-Filter: score generated samples by named rules, keep the good ones, say why others went."""

from torchgeo_earthsynth.rfilter.filter import (
    RULES,
    RFilter,
    RFilterResult,
    RFilterSummary,
    load_task,
    per_sample_miou,
    select,
)
from torchgeo_earthsynth.rfilter.models import (
    DEFAULT_TOKENIZER,
    TaskKind,
)
from torchgeo_earthsynth.rfilter.objects import (
    box_crops,
    object_reason,
    object_scores,
    probabilities,
)
from torchgeo_earthsynth.rfilter.protocol import (
    BatchFilter,
    KeyedFilter,
    SampleFilter,
    filter_verdict,
)
from torchgeo_earthsynth.rfilter.rules import (
    NoveltyFeatures,
)

__all__ = (
    'DEFAULT_TOKENIZER',
    'RULES',
    'BatchFilter',
    'KeyedFilter',
    'NoveltyFeatures',
    'RFilter',
    'RFilterResult',
    'RFilterSummary',
    'SampleFilter',
    'TaskKind',
    'box_crops',
    'filter_verdict',
    'load_task',
    'object_reason',
    'object_scores',
    'per_sample_miou',
    'probabilities',
    'select',
)
