# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Families as plug-ins: declared conditions, the request dict, a new family in one module."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
from torch import Tensor

from torchgeo_earthsynth.families import (
    FAMILIES,
    GeneratorFamily,
    InpaintingFamily,
    MaskControlNetFamily,
    MetadataFamily,
    ResolutionLevelFamily,
    register,
)
from torchgeo_earthsynth.synthesis import Synthesizer, synthesizer

SIZE = 32


class TintFamily(GeneratorFamily):
    """A toy family: a ``tint`` [B] per sample, added to every generated pixel."""

    def __init__(self, pipeline: Any, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(pipeline, settings)
        self.accepts = frozenset({'tint'})

    @staticmethod
    def recognises(pipeline: Any) -> bool:
        return True

    def finish(self, call: Any, images: Tensor) -> Tensor:
        if 'tint' not in call.request:
            return images
        return images + call.request['tint'][call.batch, None, None, None]


@pytest.fixture
def tint_registered() -> Iterator[None]:
    register(TintFamily)
    yield
    FAMILIES.remove(TintFamily)


@pytest.fixture(scope='module')
def synth() -> Synthesizer:
    return Synthesizer.tiny(image_size=SIZE, num_inference_steps=2, guidance_scale=1.0)


@pytest.fixture(scope='module')
def masks() -> Tensor:
    return torch.randint(0, 10, (2, SIZE, SIZE))


def test_families_declare_conditions(synth: Synthesizer) -> None:
    kinds = [type(family) for family in synth.families]
    assert kinds == [MaskControlNetFamily, InpaintingFamily]
    assert synth.needs == {'mask'}
    assert synth.accepts == {'prompt', 'mask', 'image', 'inpaint_mask', 'inpaint_seam'}
    text2earth = Synthesizer.tiny(image_size=SIZE, family='text2earth')
    assert ResolutionLevelFamily in {type(family) for family in text2earth.families}
    assert text2earth.takes('levels') and not text2earth.takes('mask')
    diffusionsat = Synthesizer.tiny(image_size=SIZE, family='diffusionsat')
    assert MetadataFamily in {type(family) for family in diffusionsat.families}
    assert diffusionsat.needs == {'metadata'}


def test_request_dict_equals_keywords(synth: Synthesizer, masks: Tensor) -> None:
    prompts = ['a road', 'water']
    by_keywords = synth.generate(masks, prompts, seeds=[3, 4])
    by_request = synth.sample({'mask': masks, 'prompt': prompts}, seeds=[3, 4])
    assert torch.equal(by_keywords, by_request)


def test_request_errors_name_the_condition(synth: Synthesizer, masks: Tensor) -> None:
    with pytest.raises(ValueError, match=r'is a mask ControlNet: generate needs masks'):
        synth.sample({'prompt': ['x', 'y']})
    with pytest.raises(ValueError, match=r'unknown request keys \[.colour.\]'):
        synth.sample({'mask': masks, 'prompt': ['x', 'y'], 'colour': 1})
    with pytest.raises(ValueError, match='not conditioned on metadata'):
        synth.sample({'mask': masks, 'prompt': ['x', 'y'], 'metadata': torch.zeros(2, 7)})
    with pytest.raises(ValueError, match='needs prompt'):
        synth.sample({'mask': masks})


def test_a_new_family_is_one_class_and_one_registration(
    synth: Synthesizer, masks: Tensor, tint_registered: None
) -> None:
    prompts = ['a road', 'water']
    plain = synth.generate(masks, prompts)
    assert synth.takes('tint')
    assert torch.equal(synth.sample({'mask': masks, 'prompt': prompts}), plain)
    tinted = synth.sample({'mask': masks, 'prompt': prompts, 'tint': torch.tensor([1.0, 2.0])})
    assert torch.allclose(tinted - plain, torch.tensor([1.0, 2.0])[:, None, None, None])


def test_the_family_is_gone_when_unregistered(synth: Synthesizer, masks: Tensor) -> None:
    assert TintFamily not in FAMILIES
    with pytest.raises(ValueError, match='unknown request keys'):
        synth.sample({'mask': masks, 'prompt': ['x', 'y'], 'tint': torch.zeros(2)})


@pytest.mark.parametrize('method', ['generate', 'sample'])
def test_sampling_core_is_short(method: str) -> None:
    tree = ast.parse(inspect.getsource(synthesizer))
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == method]
    assert node.end_lineno is not None
    assert node.end_lineno - node.lineno + 1 <= 80


def test_the_core_names_no_family() -> None:
    source = inspect.getsource(synthesizer)
    core = source.split('def sample(')[1].split('def _latent_shape(')[0]
    for name in ('DiffusionSat', 'Text2Earth', 'ControlNet', 'inpaint', 'low_res', 'levels'):
        assert name not in core, name
