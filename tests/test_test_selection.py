# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""A newcomer's ``pytest`` leaves out the paper-scale test; ``-m paper_scale`` opts in."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def collected(*args: str) -> list[str]:
    """The test ids ``pytest --collect-only -q`` lists for tests/test_paper_scale.py."""
    result = subprocess.run(
        [
            sys.executable,
            '-m',
            'pytest',
            '--collect-only',
            '-q',
            '-p',
            'no:cacheprovider',
            'tests/test_paper_scale.py',
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    # rc 5: nothing collected, the default's expected answer
    assert result.returncode in (0, 5), result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if '::' in line]


def test_default_run_deselects_paper_scale() -> None:
    assert collected() == []


def test_marker_opts_in() -> None:
    ids = collected('-m', 'paper_scale')
    names = {i.split('::')[-1] for i in ids}
    assert 'test_sd15_fit_export_pipeline_synthesizer_rfilter_bank' in names, ids
