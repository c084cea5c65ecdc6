# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The generator shipped with the package: tiny EarthSynth on the long-tailed mini corpus."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Final

#: Folder of the shipped generator (a diffusers pipeline export, safetensors weights).
SHIPPED_GENERATOR: Final = Path(__file__).resolve().parent.parent / 'weights' / 'mini_generator'
#: The file listing each shipped file's SHA-256, as ``sha256sum`` writes it.
CHECKSUMS: Final = 'SHA256SUMS'
#: The fidelity the recipe's run measured, with its command (JSON).
FIDELITY: Final = 'fidelity.json'


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_generator(folder: str | Path = SHIPPED_GENERATOR) -> Path:
    """The shipped generator's folder, after checking every file against its SHA-256.

    Load it with ``Synthesizer.from_pretrained(shipped_generator())``.

    Args:
        folder: the folder to check (default: the one in the package).

    Returns:
        ``folder``.

    Raises:
        FileNotFoundError: if the folder or its ``SHA256SUMS`` is missing.
        ValueError: if a listed file is missing or its hash differs.

    .. versionadded:: 0.2
    """
    folder = Path(folder)
    sums = folder / CHECKSUMS
    if not sums.is_file():
        raise FileNotFoundError(f'{sums}: no shipped generator here (its {CHECKSUMS} is missing)')
    for line_number, line in enumerate(sums.read_text().splitlines(), 1):
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise ValueError(f'{sums}:{line_number}: expected "<sha256>  <file>", got {line!r}')
        digest, name = fields
        path = folder / name.lstrip('*')
        if folder.resolve() not in path.resolve().parents:
            raise ValueError(f'{sums}:{line_number}: {name} lies outside {folder}')
        if not path.is_file():
            raise ValueError(f'{sums}:{line_number}: {path} is missing')
        if _sha256(path) != digest:
            raise ValueError(f'{sums}:{line_number}: {path} does not match its SHA-256 {digest}')
    return folder


def shipped_fidelity(folder: str | Path = SHIPPED_GENERATOR) -> dict[str, Any]:
    """The mask fidelity the shipped generator's recipe measured (``fidelity.json``)."""
    result: dict[str, Any] = json.loads((Path(folder) / FIDELITY).read_text())
    return result


def install_generator(
    export: str | Path, fidelity: dict[str, Any], folder: str | Path = SHIPPED_GENERATOR
) -> Path:
    """Copy a pipeline export into ``folder`` with its hashes and measured fidelity.

    Only what loading needs is copied (configs, safetensors, tokenizer files, model card).

    Args:
        export: a pipeline export (``model_index.json`` + parts), e.g. from
            :class:`~torchgeo_earthsynth.lightning_modules.DiffusersExport`.
        fidelity: what :mod:`benchmarks.shipped_generator` measured, written as ``fidelity.json``.
        folder: target folder, replaced.

    Returns:
        ``folder``.

    .. versionadded:: 0.2
    """
    export, folder = Path(export), Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    files = sorted(
        p.relative_to(export)
        for p in export.rglob('*')
        if p.is_file() and p.suffix in ('.json', '.safetensors', '.txt', '.md')
    )
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export / name, folder / name)
    (folder / FIDELITY).write_text(json.dumps(fidelity, indent=2) + '\n')
    lines = [f'{_sha256(folder / n)}  {n.as_posix()}' for n in [*files, Path(FIDELITY)]]
    (folder / CHECKSUMS).write_text('\n'.join(lines) + '\n')
    return folder


__all__ = ('SHIPPED_GENERATOR', 'install_generator', 'shipped_fidelity', 'shipped_generator')
