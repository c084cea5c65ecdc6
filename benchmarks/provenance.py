# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""When and where a benchmark ran, and the one place that writes its JSON result."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torchgeo_earthsynth.atomic import atomic_write_text

#: Where the scripts write ``<name>.json`` unless given ``--results``.
RESULTS = Path(__file__).parent / 'results'


def where() -> dict[str, Any]:
    """The machine and software a measurement ran on."""
    import torch

    return {
        'platform': platform.platform(),
        'machine': platform.machine(),
        'cpus': os.cpu_count(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def add_results_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--results DIR``: the folder of the script's JSON (default ``benchmarks/results``)."""
    parser.add_argument('--results', type=Path, default=RESULTS, help='folder for the JSON result')


def write_result(
    name: str,
    results: Mapping[str, Any],
    folder: Path = RESULTS,
    argv: Sequence[str] | None = None,
    script: str | None = None,
) -> Path:
    """Write ``<folder>/<name>.json``: the results with when (UTC) and where they were measured.

    Args:
        name: the benchmark (the script's stem).
        results: what it measured (JSON-serialisable).
        folder: where to write.
        argv: the script's arguments (default ``sys.argv[1:]``), kept as its command.
        script: the script's stem where it differs from ``name``.

    Returns:
        The file written.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    record = {
        'benchmark': name,
        'when': datetime.now(UTC).isoformat(timespec='seconds'),
        'where': where(),
        'command': ' '.join(['python', f'benchmarks/{script or name}.py', *args]),
        'results': dict(results),
    }
    path = Path(folder) / f'{name}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + '\n', durable=False)
    print(f'results: {path}')
    return path
