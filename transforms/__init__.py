# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""torchgeo_earthsynth.transforms."""

__all__: tuple[str, ...] = ()
