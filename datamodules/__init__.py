# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""torchgeo_earthsynth.datamodules."""

__all__: tuple[str, ...] = ()
