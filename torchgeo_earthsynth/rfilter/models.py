# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""R-Filter's models: the CLIP scorer, TorchGeo task checkpoints and their logits."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, cast

import torch
from torch import Tensor, nn

from torchgeo_earthsynth.metrics import ClipModel, ClipScorer, Tokenizer

TaskKind = Literal['segmentation', 'classification']


#: The standard CLIP BPE tokenizer (bundled with open_clip, so it works offline).
DEFAULT_TOKENIZER: Final[str] = 'ViT-B-32'


def _device(module: nn.Module, default: torch.device) -> torch.device:
    """The device of a module's first parameter or buffer, else ``default``."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return default if tensor is None else tensor.device


def _clip_scorer(
    model: str | nn.Module | ClipScorer,
    pretrained: str | None,
    checkpoint: str | Path | None,
    tokenizer: Tokenizer | None,
    device: str,
) -> ClipScorer:
    """The alignment rule's CLIP scorer from a name (tag or checkpoint), a model or a scorer."""
    if isinstance(model, ClipScorer):
        return model
    if not isinstance(model, str):
        import open_clip

        tokenizer = tokenizer or open_clip.get_tokenizer(DEFAULT_TOKENIZER)
        return ClipScorer(cast(ClipModel, model), tokenizer)
    source = pretrained
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ValueError(f'clip_checkpoint {str(checkpoint)!r} is not a file')
        source = str(checkpoint)
    try:
        scorer = ClipScorer.from_pretrained(model, source, device=device)
    except (OSError, RuntimeError, ValueError) as err:
        raise RuntimeError(
            f'could not load open_clip model {model!r} with pretrained={source!r} ({err}). '
            'Offline, download the weights once elsewhere and pass clip_checkpoint=<file>, or '
            'pass a built model as clip_model, or set alignment=False.'
        ) from err
    if tokenizer is not None:
        scorer.tokenizer = tokenizer
    return scorer


def load_task(
    checkpoint: str | Path,
    kind: TaskKind = 'segmentation',
    map_location: str | torch.device = 'cpu',
    weights_only: bool = True,
) -> nn.Module:
    """Load a TorchGeo task (``SemanticSegmentationTask`` or ``ClassificationTask``).

    Args:
        checkpoint: a Lightning checkpoint of the task.
        kind: which task class saved it.
        map_location: device to load the weights on.
        weights_only: passed to ``torch.load``; TorchGeo checkpoints made by a Trainer load with
            True. Set False only for a trusted checkpoint whose hyperparameters hold objects.

    Returns:
        The task in eval mode; calling it maps a normalised batch to logits.

    Raises:
        ValueError: if ``checkpoint`` is not a file.
    """
    from torchgeo_earthsynth.compat import ClassificationTask, SemanticSegmentationTask

    if not Path(checkpoint).is_file():
        raise ValueError(f'{kind} checkpoint {str(checkpoint)!r} is not a file')
    cls: Any = SemanticSegmentationTask if kind == 'segmentation' else ClassificationTask
    task: nn.Module = cls.load_from_checkpoint(
        checkpoint, map_location=map_location, weights_only=weights_only
    )
    return task.eval()


def _logits(output: Any) -> Tensor:
    """Logits from a model output: a tensor, or a torchvision-style ``{'out': ...}`` dict."""
    if isinstance(output, Mapping):
        output = output['out']
    if not isinstance(output, Tensor):
        raise ValueError(f'model returned {type(output).__name__}, expected a logits tensor')
    return output


__all__ = (
    'DEFAULT_TOKENIZER',
    'TaskKind',
    'load_task',
)
