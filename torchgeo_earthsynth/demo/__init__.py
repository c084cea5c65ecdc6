# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth demo``: the whole EarthSynth loop on the bundled mini corpus, with a report."""

from torchgeo_earthsynth.demo.config import (
    DemoConfig,
)
from torchgeo_earthsynth.demo.report import (
    loss_curve,
    write_report,
)
from torchgeo_earthsynth.demo.run import (
    demo_datamodule,
    main,
    run_demo,
)
from torchgeo_earthsynth.demo.stages import (
    BankResult,
    build_bank,
    downstream_study,
)

__all__ = (
    'BankResult',
    'DemoConfig',
    'build_bank',
    'demo_datamodule',
    'downstream_study',
    'loss_curve',
    'main',
    'run_demo',
    'write_report',
)
