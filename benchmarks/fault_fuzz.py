#!/usr/bin/env python3

# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Fault-and-fuzz run: hostile corpora for the reader, kill -9 for ``earthsynth synthesize``.

1. Reader: copies the fake EarthSynth-180K root of the tests (``tests/data/earthsynth180k``),
   mutates it one way at a time (truncated and corrupt PNGs, decompression-bomb headers,
   JPEG-as-PNG masks, symlinks escaping the root, duplicated/BOM/garbage JSONL lines, wrong
   mask sizes, grey+alpha, directories as files, ...; each kind in several seeded variants)
   and reads every sample with ``strict=True`` and ``strict=False``. A bad mutation is
   handled well when strict reading stops with a ``ValueError`` (or TorchGeo's
   ``DatasetNotFoundError``) naming the file or the JSONL line, and lenient reading counts a
   skip (or gives that clear error when nothing readable is left); anything else is a crash
   (a raw exception) or silent acceptance. A benign mutation (BOM, CRLF, opaque alpha, ...)
   is handled well when both modes read every sample as before.
2. Synthesis: fills a bank uninterrupted, then fills another one while killing the
   ``earthsynth synthesize`` process with SIGKILL at several moments (before its first
   sample, after the first, midway, near the end), resuming after each kill. A kill is
   survived when the bank reads back after it (every stored sample decodes) and the final
   bank holds every key once, byte-identical (PNG bytes) to the uninterrupted one.

Prints one table per part and writes ``<out>/reader.csv``, ``<out>/kills.csv`` and
``<out>/summary.json``. Seeded: a rerun tries the same mutations.

    uv run python benchmarks/fault_fuzz.py [--seed 0] [--variants 2] [--keys 12]
        [--out outputs/fault_fuzz] [--skip-kills]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from provenance import add_results_argument, write_result

REPO = Path(__file__).resolve().parents[1]
FAKE = REPO / 'tests' / 'data' / 'earthsynth180k'


# ---------------------------------------------------------------------- 1. reader mutations
@dataclass
class Mutation:
    """One way to damage (or harmlessly vary) a corpus."""

    name: str
    bad: bool
    apply: Callable[[Path, random.Random], list[str]]  # returns names the error must cite


def _records(root: Path) -> list[str]:
    return (root / 'train' / 'train.jsonl').read_text().splitlines()


def _write_records(root: Path, lines: list[str], newline: str = '\n') -> None:
    (root / 'train' / 'train.jsonl').write_text(''.join(line + newline for line in lines))


def _full(root: Path, rng: random.Random) -> tuple[int, dict[str, Any]]:
    """A random full-scene record: (line number, record)."""
    lines = _records(root)
    full = [(n, json.loads(t)) for n, t in enumerate(lines, 1) if '"images/' in t]
    return rng.choice(full)


def _file(root: Path, rng: random.Random, field: str) -> tuple[Path, int]:
    number, record = _full(root, rng)
    return root / 'train' / record[field], number


def _png(array: np.ndarray, fmt: str = 'PNG') -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _claim_size(png: bytes, width: int, height: int) -> bytes:
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack('>II', width, height)
    crc = struct.pack('>I', zlib.crc32(b'IHDR' + bytes(ihdr)))
    return png[:16] + bytes(ihdr) + crc + png[33:]


def _mask_array(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert('L'))


def on_file(
    change: Callable[[Path, random.Random], str | None],
) -> Callable[[str], Callable[[Path, random.Random], list[str]]]:
    """A mutation of the image or mask file of a random full record, by its JSONL field.

    ``change`` damages the file and may return another name the error may cite.
    """

    def for_field(field: str) -> Callable[[Path, random.Random], list[str]]:
        def apply(root: Path, rng: random.Random) -> list[str]:
            path, number = _file(root, rng, field)
            extra = change(path, rng)
            return [path.name, f'line {number}', *([extra] if extra else [])]

        return apply

    return for_field


@on_file
def truncate(path: Path, rng: random.Random) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: rng.randint(8, len(data) // 2)])


@on_file
def corrupt(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    start = data.find(b'IDAT') + 8
    for _ in range(16):
        data[rng.randrange(start, len(data) - 12)] ^= 0xFF
    path.write_bytes(bytes(data))


@on_file
def empty_file(path: Path, rng: random.Random) -> None:
    path.write_bytes(b'')


@on_file
def bomb(path: Path, rng: random.Random) -> None:
    side = rng.choice([20000, 40000, 65535])
    path.write_bytes(_claim_size(path.read_bytes(), side, side))


@on_file
def directory(path: Path, rng: random.Random) -> None:
    path.unlink()
    path.mkdir()


@on_file
def missing(path: Path, rng: random.Random) -> None:
    path.unlink()


@on_file
def symlink_out(path: Path, rng: random.Random) -> str:
    outside = path.parents[2].parent / f'outside-{rng.randrange(10**6)}.png'
    shutil.copy(path, outside)
    path.unlink()
    path.symlink_to(outside)
    return outside.name


def jpeg_mask(root: Path, rng: random.Random) -> list[str]:
    path, number = _file(root, rng, 'mask_name')
    path.write_bytes(_png(_mask_array(path), 'JPEG'))
    return [path.name, f'line {number}']


def mask_wrong_size(root: Path, rng: random.Random) -> list[str]:
    path, number = _file(root, rng, 'mask_name')
    mask = _mask_array(path)
    path.write_bytes(_png(mask[: mask.shape[0] // 2]))
    return [path.name, f'line {number}']


def mask_unknown_class(root: Path, rng: random.Random) -> list[str]:
    path, number = _file(root, rng, 'mask_name')
    mask = _mask_array(path).copy()
    mask[: rng.randint(1, 4), : rng.randint(1, 4)] = rng.randint(67, 254)
    path.write_bytes(_png(mask))
    return [path.name, f'line {number}']


def mask_unequal_rgb(root: Path, rng: random.Random) -> list[str]:
    path, number = _file(root, rng, 'mask_name')
    mask = _mask_array(path)
    rgb = np.stack([mask, mask, mask], -1).copy()
    rgb[..., rng.randrange(3)] = (rgb[..., 0].astype(int) + 1) % 256
    path.write_bytes(_png(rgb))
    return [path.name, f'line {number}']


def mask_transparent(root: Path, rng: random.Random) -> list[str]:
    path, number = _file(root, rng, 'mask_name')
    mask = _mask_array(path)
    alpha = np.full_like(mask, 255)
    alpha[: rng.randint(1, 8)] = 0
    path.write_bytes(_png(np.stack([mask, alpha], -1)))
    return [path.name, f'line {number}']


def mask_16bit(root: Path, rng: random.Random) -> list[str]:
    path, number = _file(root, rng, 'mask_name')
    mask = _mask_array(path).astype(np.uint16) + rng.choice([256, 1000])
    path.write_bytes(_png(mask))
    return [path.name, f'line {number}']


def path_escape(kind: str) -> Callable[[Path, random.Random], list[str]]:
    def apply(root: Path, rng: random.Random) -> list[str]:
        lines = _records(root)
        number, record = _full(root, rng)
        outside = root.parent / f'escaped-{rng.randrange(10**6)}.png'
        shutil.copy(root / 'train' / record['file_name'], outside)
        record['file_name'] = str(outside) if kind == 'absolute' else f'../../{outside.name}'
        lines[number - 1] = json.dumps(record)
        _write_records(root, lines)
        return [f'line {number}']

    return apply


def duplicate_line(root: Path, rng: random.Random) -> list[str]:
    lines = _records(root)
    number, _ = _full(root, rng)
    at = rng.randint(number, len(lines))
    lines.insert(at, lines[number - 1])
    _write_records(root, lines)
    return [f'line {at + 1}']


def garbage_line(kind: str) -> Callable[[Path, random.Random], list[str]]:
    def apply(root: Path, rng: random.Random) -> list[str]:
        lines = _records(root)
        at = rng.randint(0, len(lines))
        line = {
            'text': '{"file_name": "images/x.png", "mask_name": ',
            'list': json.dumps([1, 2, 3]),
            'number': str(rng.randint(0, 99)),
        }[kind]
        lines.insert(at, line)
        _write_records(root, lines)
        return [f'line {at + 1}']

    return apply


def field_damage(kind: str) -> Callable[[Path, random.Random], list[str]]:
    def apply(root: Path, rng: random.Random) -> list[str]:
        lines = _records(root)
        number, record = _full(root, rng)
        if kind == 'missing mask_name':
            del record['mask_name']
        elif kind == 'text not a string':
            record['text'] = rng.randint(0, 9)
        else:  # file_name not a string
            record['file_name'] = [record['file_name']]
        lines[number - 1] = json.dumps(record)
        _write_records(root, lines)
        return [f'line {number}']

    return apply


def jsonl_binary(root: Path, rng: random.Random) -> list[str]:
    data = bytes(rng.randrange(256) for _ in range(200))
    (root / 'train' / 'train.jsonl').write_bytes(b'\xff\xfe' + data)
    return ['train.jsonl']


def jsonl_directory(root: Path, rng: random.Random) -> list[str]:
    path = root / 'train' / 'train.jsonl'
    path.unlink()
    path.mkdir()
    return ['train.jsonl']


def jsonl_empty(root: Path, rng: random.Random) -> list[str]:
    (root / 'train' / 'train.jsonl').write_text('')
    return ['train.jsonl']


# benign ones: the reader must read every sample as before
def bom(root: Path, rng: random.Random) -> list[str]:
    path = root / 'train' / 'train.jsonl'
    path.write_bytes(b'\xef\xbb\xbf' + path.read_bytes())
    return []


def crlf(root: Path, rng: random.Random) -> list[str]:
    _write_records(root, _records(root), '\r\n')
    return []


def blank_lines(root: Path, rng: random.Random) -> list[str]:
    lines = _records(root)
    lines.insert(rng.randint(0, len(lines)), '')
    _write_records(root, [*lines, '', '   '])
    return []


def extra_field(root: Path, rng: random.Random) -> list[str]:
    lines = [json.loads(line) | {'note': rng.random()} for line in _records(root)]
    _write_records(root, [json.dumps(r) for r in lines])
    return []


def mask_equal_rgb(root: Path, rng: random.Random) -> list[str]:
    path, _ = _file(root, rng, 'mask_name')
    mask = _mask_array(path)
    path.write_bytes(_png(np.stack([mask, mask, mask], -1)))
    return []


def mask_opaque_alpha(root: Path, rng: random.Random) -> list[str]:
    path, _ = _file(root, rng, 'mask_name')
    mask = _mask_array(path)
    path.write_bytes(_png(np.stack([mask, np.full_like(mask, 255)], -1)))
    return []


def symlink_inside(root: Path, rng: random.Random) -> list[str]:
    path, _ = _file(root, rng, 'file_name')
    twin = path.with_name(f'.twin-{path.name}')
    path.rename(twin)
    path.symlink_to(twin.name)
    return []


FILE_MUTATIONS = {
    'truncated {}': truncate,
    'corrupt {} data': corrupt,
    'empty {} file': empty_file,
    'decompression bomb {}': bomb,
    '{} is a directory': directory,
    '{} missing': missing,
    '{} symlink out of root': symlink_out,
}

MUTATIONS = [
    *(
        Mutation(name.format(which), True, mutate(field))
        for name, mutate in FILE_MUTATIONS.items()
        for which, field in (('image', 'file_name'), ('mask', 'mask_name'))
    ),
    Mutation('JPEG mask named .png', True, jpeg_mask),
    Mutation('mask of another size', True, mask_wrong_size),
    Mutation('mask class id > 66', True, mask_unknown_class),
    Mutation('mask RGB, unequal channels', True, mask_unequal_rgb),
    Mutation('mask grey+alpha, transparent', True, mask_transparent),
    Mutation('mask 16-bit, ids > 255', True, mask_16bit),
    Mutation('JSONL path ../ out of root', True, path_escape('relative')),
    Mutation('JSONL absolute path', True, path_escape('absolute')),
    Mutation('JSONL duplicated record', True, duplicate_line),
    Mutation('JSONL torn line', True, garbage_line('text')),
    Mutation('JSONL line is a list', True, garbage_line('list')),
    Mutation('JSONL line is a number', True, garbage_line('number')),
    Mutation('JSONL record lacks mask_name', True, field_damage('missing mask_name')),
    Mutation('JSONL text not a string', True, field_damage('text not a string')),
    Mutation('JSONL file_name not a string', True, field_damage('file_name not a string')),
    Mutation('JSONL binary garbage', True, jsonl_binary),
    Mutation('JSONL is a directory', True, jsonl_directory),
    Mutation('JSONL empty', True, jsonl_empty),
    Mutation('benign: UTF-8 BOM', False, bom),
    Mutation('benign: CRLF lines', False, crlf),
    Mutation('benign: blank lines', False, blank_lines),
    Mutation('benign: extra JSON field', False, extra_field),
    Mutation('benign: mask RGB, equal channels', False, mask_equal_rgb),
    Mutation('benign: mask grey+alpha, opaque', False, mask_opaque_alpha),
    Mutation('benign: symlink inside root', False, symlink_inside),
]


def read_all(root: Path, strict: bool) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every sample of the train split (full and category), and the skip counts."""
    from torchgeo_earthsynth.datasets import EarthSynth180K

    dataset = EarthSynth180K(root, split='train', mode='both', strict=strict)
    samples = [dataset[i] for i in range(len(dataset))]
    return samples, dict(dataset.skipped)


def clear(error: BaseException, cites: list[str]) -> bool:
    """A ValueError (or DatasetNotFoundError) naming the file or line."""
    from torchgeo_earthsynth.compat import DatasetNotFoundError

    kinds = (ValueError, DatasetNotFoundError)
    return isinstance(error, kinds) and any(c in str(error) for c in cites)


def judge(mutation: Mutation, root: Path, baseline: int, rng: random.Random) -> dict[str, Any]:
    cites = mutation.apply(root, rng)
    outcome: dict[str, str] = {}
    for strict in (True, False):
        mode = 'strict' if strict else 'lenient'
        try:
            samples, skipped = read_all(root, strict)
        except Exception as error:  # what the reader raised is the measurement
            text = f'{type(error).__name__}: {str(error)[:60]}'
            if mutation.bad and clear(error, cites):
                outcome[mode] = 'clear error'
            else:
                outcome[mode] = f'crash ({text})'
            continue
        if not mutation.bad:
            ok = len(samples) == baseline and not skipped
            outcome[mode] = 'read all' if ok else f'lost {baseline - len(samples)} ({skipped})'
        elif strict:
            outcome[mode] = 'silently accepted'
        else:
            outcome[mode] = (
                f'counted skip ({sum(skipped.values())})' if skipped else 'silently accepted'
            )
    if mutation.bad:
        handled = outcome['strict'] == 'clear error' and (
            outcome['lenient'] == 'clear error' or outcome['lenient'].startswith('counted skip')
        )
    else:
        handled = outcome['strict'] == outcome['lenient'] == 'read all'
    return {'mutation': mutation.name, 'bad': mutation.bad, **outcome, 'handled': handled}


def fuzz_reader(seed: int, variants: int, work: Path) -> list[dict[str, Any]]:
    base = work / 'base'
    shutil.copytree(FAKE / 'train', base / 'train')
    baseline = len(read_all(base, strict=True)[0])
    rows = []
    for index, mutation in enumerate(MUTATIONS):
        for variant in range(variants):
            rng = random.Random(f'{seed}-{index}-{variant}')
            trial = work / f'm{index}-{variant}'
            shutil.copytree(base, trial / 'data', symlinks=True)
            rows.append(judge(mutation, trial / 'data', baseline, rng) | {'variant': variant})
            shutil.rmtree(trial)
    return rows


# ---------------------------------------------------------------------- 2. kill -9 synthesis
def synthesize_command(corpus: Path, bank: Path, keys: int) -> list[str]:
    return [
        sys.executable,
        '-m',
        'torchgeo_earthsynth.cli',
        'synthesize',
        '--model',
        'torchgeo_earthsynth.lightning_modules.EarthSynthControlNet',
        '--model.preset',
        'tiny',
        '--model.image_size',
        '32',
        '--model.predict_inference_steps',
        '3',
        '--data.root',
        str(corpus),
        '--data.split',
        'train',
        '--data.batch_size',
        '2',
        '--data.limit',
        str(keys),
        '--bank.root',
        str(bank),
        '--trainer.accelerator',
        'cpu',
        '--trainer.enable_progress_bar',
        'false',
        '--allow-untrained',
    ]


def stored_lines(bank: Path) -> int:
    parts = bank / 'train' / 'parts'
    if not parts.is_dir():
        return 0
    return sum(p.read_bytes().count(b'\n') for p in parts.glob('*.jsonl'))


def bank_files(bank: Path) -> dict[Any, tuple[bytes, bytes]]:
    """Key -> (image PNG bytes, mask PNG bytes) of the bank's samples; all must decode."""
    from torchgeo_earthsynth.bank import SyntheticBank

    reader = SyntheticBank(bank).refresh()
    records = [json.loads(line) for line in reader.jsonl.read_text().splitlines()]
    out: dict[Any, tuple[bytes, bytes]] = {}
    for record in records:
        image = (bank / 'train' / record['file_name']).read_bytes()
        mask = (bank / 'train' / record['mask_name']).read_bytes()
        for data in (image, mask):
            Image.open(io.BytesIO(data)).load()
        if record['key'] in out:
            raise AssertionError(f'key {record["key"]} stored twice')
        out[record['key']] = (image, mask)
    return out


def run_to_end(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f'synthesize failed: {done.stderr[-2000:]}')


def kill_at(command: list[str], env: dict[str, str], bank: Path, after: int) -> str:
    """Start synthesize; SIGKILL it once the bank holds ``after`` samples (0: at its start)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = stored_lines(bank)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if (
            after == 0
            and (bank / 'train' / 'claims').is_dir()
            and any((bank / 'train' / 'claims').iterdir())
        ):
            break  # it claimed its first batch: killed before storing anything
        if after > 0 and stored_lines(bank) >= max(after, start + 1):
            break
        time.sleep(0.02)
    if process.poll() is not None:
        return f'finished before the kill (rc {process.returncode})'
    process.send_signal(signal.SIGKILL)
    process.wait()
    return f'killed after {stored_lines(bank) - start} new samples'


def fuzz_kills(keys: int, work: Path) -> list[dict[str, Any]]:
    from torchgeo_earthsynth.datasets import make_mini_corpus

    corpus = make_mini_corpus(work / 'corpus', seed=0, size=32, num_train=keys, num_val=2)
    env = os.environ | {'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    reference = work / 'reference'
    run_to_end(synthesize_command(corpus, reference, keys), env)
    expected = bank_files(reference)
    bank = work / 'killed'
    command = synthesize_command(corpus, bank, keys)
    rows = []
    for after in (0, 1, keys // 2, keys - 1):
        what = kill_at(command, env, bank, after)
        try:
            readable = len(bank_files(bank)) if (bank / 'train').exists() else 0
            state = f'reads back ({readable} samples)'
        except Exception as error:  # a broken bank is the finding
            state = f'BROKEN: {type(error).__name__}: {error}'
        rows.append({'moment': f'bank holds {after}', 'what': what, 'bank': state})
    run_to_end(command, env)
    final = bank_files(bank)
    identical = final.keys() == expected.keys() and all(final[k] == expected[k] for k in expected)
    for row in rows:
        killed = row['what'].startswith('killed')
        row['survived'] = killed and identical and not row['bank'].startswith('BROKEN')
    rows.append(
        {
            'moment': 'final resume',
            'what': f'{len(final)} of {keys} keys',
            'bank': 'byte-identical to the uninterrupted bank' if identical else 'DIFFERS',
            'survived': identical,
        }
    )
    return rows


# ---------------------------------------------------------------------- report
def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ['  '.join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append('  '.join('-' * w for w in widths))
    lines += ['  '.join(str(r[c]).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return '\n'.join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the package's warnings (the table says them), restoring both on exit."""
    package = logging.getLogger('torchgeo_earthsynth')
    level = package.level
    package.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        package.setLevel(level)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seed', type=int, default=0, help='seed of the mutations')
    parser.add_argument('--variants', type=int, default=2, help='seeded variants per mutation')
    parser.add_argument('--keys', type=int, default=12, help='keys of the synthesised bank')
    parser.add_argument('--skip-kills', action='store_true', help='only fuzz the reader')
    parser.add_argument('--out', type=Path, default=Path('outputs/fault_fuzz'))
    add_results_argument(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with quiet(), tempfile.TemporaryDirectory() as tmp:
        reader = fuzz_reader(args.seed, args.variants, Path(tmp) / 'reader')
        kills = [] if args.skip_kills else fuzz_kills(args.keys, Path(tmp) / 'kills')
    print(table(reader, ['mutation', 'variant', 'strict', 'lenient', 'handled']))
    bad = [r for r in reader if r['bad']]
    benign = [r for r in reader if not r['bad']]
    summary: dict[str, Any] = {
        'seed': args.seed,
        'mutations tried': len(reader),
        'bad mutations': len(bad),
        'bad handled well': sum(r['handled'] for r in bad),
        'benign': len(benign),
        'benign read intact': sum(r['handled'] for r in benign),
        'kills': sum(r['what'].startswith('killed') for r in kills[:-1]),
        'kills survived': sum(r['survived'] for r in kills[:-1]),
        'final bank identical': bool(kills and kills[-1]['survived']),
        'seconds': round(time.monotonic() - started, 1),
    }
    if kills:
        print()
        print(table(kills, ['moment', 'what', 'bank', 'survived']))
        write_csv(args.out / 'kills.csv', kills)
    write_csv(args.out / 'reader.csv', reader)
    (args.out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print()
    print(
        f'reader: {summary["mutations tried"]} mutations tried; {summary["bad handled well"]} of '
        f'{summary["bad mutations"]} bad ones handled well, {summary["benign read intact"]} of '
        f'{summary["benign"]} benign ones read intact'
    )
    if kills:
        print(
            f'synthesize: {summary["kills survived"]} of {summary["kills"]} kill -9 survived; '
            f'final bank byte-identical: {summary["final bank identical"]}'
        )
    print(f'({summary["seconds"]} s; {args.out}/summary.json, reader.csv, kills.csv)')
    write_result('fault_fuzz', summary, args.results, argv)
    return summary


if __name__ == '__main__':
    main()
