# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""``earthsynth build-corpus``: the command line of the corpus builder."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

#: Python argument -> command-line flag, so errors shown by the CLI name what the user typed.
CLI_FLAGS: Final[dict[str, str]] = {
    'class_mapping': '--mapping',
    'label_column': '--label-column',
    'min_labelled_fraction': '--min-labelled',
    'max_nodata_fraction': '--max-nodata',
    'crops_per_scene': '--crops',
    'tile_size': '--tile-size',
    'source_prefix': '--prefix',
    'allow_overlap': '--allow-overlap',
    'unmapped': '--unmapped',
    'bands': '--bands',
    'labels': '--labels',
    'scenes': '--scenes',
    'split': '--split',
    'gsd': '--gsd',
    'date': '--date',
}


def _parse_mapping(text: str) -> dict[str, int | str]:
    path = Path(text)
    source = f'mapping file {path}'
    if text.lstrip().startswith('{'):
        source = 'inline --mapping'
    else:
        try:
            text = path.read_text()
        except OSError as error:
            raise ValueError(
                f'--mapping {text!r} is neither inline JSON nor a readable file ({error})'
            ) from error
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f'{source}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})'
        ) from error
    if not isinstance(mapping, dict):
        raise ValueError(f'{source}: expected a JSON object {{"label value": class id or name}}')
    return mapping


def main(argv: Sequence[str] | None = None) -> None:
    """``earthsynth build-corpus``: the command-line face of :func:`build_corpus`.

    Args:
        argv: arguments after ``build-corpus`` (default ``sys.argv[1:]``).

    .. versionadded:: 0.1
    """
    parser = argparse.ArgumentParser(
        prog='earthsynth build-corpus',
        description='Cut labelled crops from GeoTIFF scenes into an EarthSynth-180K corpus.',
    )
    parser.add_argument('--scenes', nargs='+', required=True, help='GeoTIFF scenes')
    parser.add_argument(
        '--labels',
        nargs='+',
        required=True,
        help='one label file (raster mask or vector) for all scenes, or one per scene',
    )
    parser.add_argument(
        '--mapping',
        required=True,
        help='JSON file or inline JSON: {"label value": vocabulary id or name}',
    )
    parser.add_argument('--output', required=True, help='corpus root')
    parser.add_argument('--split', choices=('train', 'val'), default='train')
    parser.add_argument('--crops', type=int, default=16, help='crops per scene')
    parser.add_argument('--tile-size', type=int, default=512)
    parser.add_argument(
        '--min-labelled',
        type=float,
        default=0.1,
        help='minimum labelled (non-background) fraction of a crop',
    )
    parser.add_argument('--bands', type=int, nargs='+', help='1-based R G B band indexes')
    parser.add_argument('--label-column', default='class', help='class attribute of vectors')
    parser.add_argument('--prefix', default='USR_', help='file-stem source prefix')
    parser.add_argument('--unmapped', choices=('error', 'background'), default='error')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--no-categories', action='store_true', help='do not write single-category samples'
    )
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument(
        '--max-nodata',
        type=float,
        default=0.1,
        help='maximum nodata share of a crop; remaining nodata pixels become background',
    )
    parser.add_argument(
        '--allow-overlap',
        action='store_true',
        help="let this split's crops overlap each other (never the other split's)",
    )
    parser.add_argument('--gsd', type=float, help='resample scenes to this many metres per pixel')
    parser.add_argument('--date', help='acquisition date YYYY-MM-DD (default: from raster tags)')
    args = parser.parse_args(argv)
    from torchgeo_earthsynth.corpus.builder import build_corpus  # after parsing: it imports torch

    try:
        mapping = _parse_mapping(args.mapping)
        report = build_corpus(
            args.scenes,
            args.labels,
            args.output,
            mapping,
            split=args.split,
            crops_per_scene=args.crops,
            tile_size=args.tile_size,
            min_labelled_fraction=args.min_labelled,
            bands=args.bands,
            label_column=args.label_column,
            source_prefix=args.prefix,
            unmapped=args.unmapped,
            seed=args.seed,
            categories=not args.no_categories,
            progress=not args.no_progress,
            max_nodata_fraction=args.max_nodata,
            allow_overlap=args.allow_overlap,
            gsd=args.gsd,
            date=args.date,
        )
    except ValueError as error:
        parser.error(cli_message(str(error)))
    print(report.summary())
    if not report.written:
        parser.exit(
            1,
            f'{parser.prog}: error: no crop was written: every candidate window was rejected '
            '(see the counts above); lower --min-labelled or raise --max-nodata, check that '
            '--labels cover --scenes, or pass more --crops tries with other scenes\n',
        )


def cli_message(message: str) -> str:
    """An error of :func:`build_corpus` with its argument names as command-line flags.

    Args:
        message: e.g. ``"... or pass unmapped='background'"``.

    Returns:
        The message naming flags instead, e.g. ``"... or pass --unmapped background"``.
    """
    for name, flag in CLI_FLAGS.items():
        message = re.sub(rf"\b{name}='?([^'\s,;)]*)'?", rf'{flag} \1', message)
        if '_' in name:  # plain words such as "split" or "labels" stay words
            message = re.sub(rf'\b{name}\b', flag, message)
    return message


__all__ = (
    'CLI_FLAGS',
    'cli_message',
    'main',
)

__all__ = ('CLI_FLAGS', 'cli_message', 'main')
