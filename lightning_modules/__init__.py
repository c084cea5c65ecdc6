# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""torchgeo_earthsynth.lightning_modules."""

__all__: tuple[str, ...] = ()
