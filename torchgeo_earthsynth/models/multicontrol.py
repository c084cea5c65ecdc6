# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The multi-condition family (CRS-Diff's conditions): one ControlNet per named control map.

diffusers' :class:`MultiControlNetModel` sums the residuals of several ControlNets, each
with its own ``conditioning_scale``; :class:`NamedMultiControlNet` adds the names, so a
request steers by any subset (``{'road': ..., 'depth': ...}``), and saves each ControlNet
in diffusers format under its name:

``<folder>/multicontrol.json`` (``{"controls": ["road", "depth"]}``) and
``<folder>/<name>/config.json`` + ``diffusion_pytorch_model.safetensors``.

A ControlNet may be a :class:`~.diffusionsat_controlnet.DiffusionSatControlNet` (the maps
plus the shared metadata condition); it loads as one from its config's ``use_metadata``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from diffusers import ControlNetModel
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

from torchgeo_earthsynth.models.diffusionsat_controlnet import (
    DiffusionSatControlNet,
    load_diffusionsat_controlnet,
)

__all__ = ('MULTICONTROL_CONFIG', 'NamedMultiControlNet', 'is_multicontrol')

#: The file naming the controls of a saved :class:`NamedMultiControlNet`.
MULTICONTROL_CONFIG: Final = 'multicontrol.json'


class NamedMultiControlNet(MultiControlNetModel):  # type: ignore[misc]  # diffusers is untyped
    """diffusers' ``MultiControlNetModel`` whose ControlNets are named by their control map.

    Args:
        controlnets: ``{name: ControlNetModel}``, in the order they are applied.

    Raises:
        ValueError: if there is no ControlNet.
    """

    def __init__(self, controlnets: Mapping[str, ControlNetModel]) -> None:
        if not controlnets:
            raise ValueError('a multi-condition ControlNet needs at least one named ControlNet')
        super().__init__(list(controlnets.values()))
        self.names: tuple[str, ...] = tuple(controlnets)

    def by_name(self) -> dict[str, ControlNetModel]:
        """``{name: ControlNetModel}``, sharing the modules."""
        return dict(zip(self.names, self.nets, strict=True))

    def metadata_nets(self) -> list[DiffusionSatControlNet]:
        """The ControlNets that take metadata (DiffusionSat's embeddings), in order."""
        return [
            net
            for net in self.nets
            if isinstance(net, DiffusionSatControlNet) and net.metadata_embedding is not None
        ]

    def subset(self, names: Sequence[str]) -> MultiControlNetModel:
        """A ``MultiControlNetModel`` over the named ControlNets only (shared, not copied).

        Raises:
            ValueError: for an unknown name (naming the known ones).
        """
        nets = self.by_name()
        unknown = [name for name in names if name not in nets]
        if unknown:
            raise ValueError(f'unknown controls {unknown}; this model takes {list(self.names)}')
        return MultiControlNetModel([nets[name] for name in names])

    def save_pretrained(self, save_directory: str | Path, **kwargs: object) -> None:
        """Save each ControlNet to ``<save_directory>/<name>/`` and the names to JSON.

        Args:
            save_directory: the folder (created).
            **kwargs: passed to each ``ControlNetModel.save_pretrained``.
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name, net in self.by_name().items():
            net.save_pretrained(folder / name, **kwargs)
        (folder / MULTICONTROL_CONFIG).write_text(json.dumps({'controls': list(self.names)}))

    @classmethod
    def from_pretrained(
        cls, pretrained_model_path: str | Path, **kwargs: object
    ) -> NamedMultiControlNet:
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            pretrained_model_path: the folder.
            **kwargs: passed to each ``ControlNetModel.from_pretrained`` (a ControlNet with
                metadata loads key for key, without them).

        Returns:
            The model.

        Raises:
            ValueError: if the JSON is malformed or a named ControlNet folder is missing.
        """
        folder = Path(pretrained_model_path)
        config = folder / MULTICONTROL_CONFIG
        try:
            names = json.loads(config.read_text())['controls']
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f'{config}: expected {{"controls": [names]}} ({error})') from error
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f'{config}: "controls" must be a list of names, got {names!r}')
        missing = [name for name in names if not (folder / name / 'config.json').exists()]
        if missing:
            raise ValueError(f'{folder}: no ControlNet folder (config.json) for controls {missing}')
        return cls({name: _load_net(folder / name, **kwargs) for name in names})


def _load_net(folder: Path, **kwargs: object) -> ControlNetModel:
    """A saved ControlNet, a :class:`DiffusionSatControlNet` where it has ``use_metadata``."""
    if 'use_metadata' in json.loads((folder / 'config.json').read_text()):
        return load_diffusionsat_controlnet(folder)
    return ControlNetModel.from_pretrained(str(folder), **kwargs)


def is_multicontrol(folder: str | Path) -> bool:
    """Whether ``folder`` (or its ``controlnet/``) holds a saved :class:`NamedMultiControlNet`."""
    path = Path(folder)
    return (path / MULTICONTROL_CONFIG).exists() or (
        path / 'controlnet' / MULTICONTROL_CONFIG
    ).exists()
