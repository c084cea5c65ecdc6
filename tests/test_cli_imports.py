# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth --help`` and the light commands' help import no Lightning, diffusers or TorchGeo."""

import json
import subprocess
import sys

import pytest

HEAVY = ('lightning', 'diffusers', 'torchgeo', 'transformers', 'torch')

#: Print which heavy packages are imported after the CLI has answered ``argv``.
PROBE = """
import json, sys
from torchgeo_earthsynth.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps([m for m in {heavy} if m in sys.modules]))
"""


def imported_after(*argv: str) -> list[str]:
    """The heavy packages in ``sys.modules`` after ``earthsynth <argv>``, in a fresh Python."""
    result = subprocess.run(
        [sys.executable, '-c', PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    imported: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return imported


@pytest.mark.parametrize(
    'argv',
    [('--help',), ('build-corpus', '--help'), ('datasets', '--help'), ('random-base', '--help')],
)
def test_help_imports_nothing_heavy(argv: tuple[str, ...]) -> None:
    assert imported_after(*argv) == []


def test_probe_sees_a_heavy_import() -> None:
    # the probe can fail: listing the datasets needs TorchGeo's names
    assert 'torchgeo' in imported_after('datasets')


def test_random_base_choices_match_its_configs() -> None:
    from torchgeo_earthsynth.cli import RANDOM_BASE_ARCHS
    from torchgeo_earthsynth.models.random_base import BASE_CONFIGS

    assert RANDOM_BASE_ARCHS == tuple(sorted(BASE_CONFIGS))
