# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth-180K dataset."""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, NamedTuple, overload

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset

from ..vocabulary import (
    NUM_CLASSES,
    PALETTE,
    VOCABULARY,
    class_histogram,
    colorize,
    prompt_from_ids,
    source_from_stem,
)
from . import layout

logger = logging.getLogger(__name__)

#: Folder under ``root`` where ``download=True`` puts the Hugging Face snapshot.
ARCHIVES: Final = 'archives'

# ``train.zip``, ``train.zip.part00``, ``train.zip_part_aa`` (as released), ``train.zip.001``
_ARCHIVE = re.compile(
    r'^(?P<base>.+?)\.zip(?:(?:[._-]?part[._-]?|\.)(?P<part>[0-9a-z]+))?$', re.IGNORECASE
)
# what PIL raises on a damaged file
_DECODE_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, zlib.error)


class EarthSynthNotFoundError(DatasetNotFoundError):
    """TorchGeo's ``DatasetNotFoundError`` that also says where we looked and how to get data.

    .. versionadded:: 0.1
    """

    def __init__(self, dataset: EarthSynth180K, reason: str | None = None) -> None:
        """Initialize a new EarthSynthNotFoundError instance.

        Args:
            dataset: the dataset that was requested.
            reason: why a download or extraction did not produce the split, if one was tried.
        """
        super().__init__(dataset)
        split_dir = dataset.split_dir
        message = (
            f'{self.args[0]} Looked for {split_dir / layout.IMAGES} and '
            f'{split_dir / layout.MASKS}, and for archives (*.zip, *.zip.partNN) in '
            f'{dataset.root / ARCHIVES}. To get the data: pass download=True to fetch the '
            f'Hugging Face dataset {dataset.repo_id!r}, or put its archives in that folder; '
            'or build a corpus from your own scenes with `earthsynth build-corpus`; or use '
            'EarthSynthMini for a small procedural corpus.'
        )
        if reason:
            message += f' ({reason})'
        self.args = (message,)


class Record(NamedTuple):
    """One sample of an :class:`EarthSynth180K`, as listed when the dataset is built.

    .. versionadded:: 0.1
    """

    #: The image PNG.
    image: Path
    #: The mask PNG.
    mask: Path
    #: The prompt from the JSONL; None: derived from the mask when read.
    prompt: str | None
    #: For a single-category sample made on the fly from a full mask, its class id.
    category: int | None
    #: Where the record came from (JSONL line or mask file), for messages.
    origin: str


class _Strings:
    """Many strings packed in two numpy arrays.

    No Python object per string, so forked DataLoader workers do not copy them page by page
    as reference counts change (180K+ records).
    """

    def __init__(self, items: Sequence[str]) -> None:
        encoded = [s.encode() for s in items]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.data = np.frombuffer(b''.join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self.data[self.offsets[index] : self.offsets[index + 1]].tobytes().decode()


class _Listing:
    """Which files exist in a split, read once per folder instead of one stat per file."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.folders: dict[str, set[str]] = {}

    def has(self, relative: str) -> bool:
        folder, _, name = relative.rpartition('/')
        if folder not in self.folders:
            try:
                self.folders[folder] = set(os.listdir(self.base / folder))
            except OSError:
                self.folders[folder] = set()
        return name in self.folders[folder]


class _RecordView(Sequence[Record]):
    """Read-only list of the :class:`Record` s of a dataset."""

    def __init__(self, dataset: EarthSynth180K) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @overload
    def __getitem__(self, index: int) -> Record: ...

    @overload
    def __getitem__(self, index: slice) -> list[Record]: ...

    def __getitem__(self, index: int | slice) -> Record | list[Record]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.dataset._record(index)

    def __iter__(self) -> Iterator[Record]:
        return (self.dataset._record(i) for i in range(len(self)))


class EarthSynth180K(NonGeoDataset):
    """EarthSynth-180K: remote-sensing images with semantic masks and prompts.

    The corpus of `EarthSynth <https://arxiv.org/abs/2505.12108>`__: 512x512 RGB tiles from
    DeepGlobe, LoveDA, OpenEarthMap and SAMRS (FAIR1M/DIOR/DOTA) with class-index masks over a
    67-class vocabulary (:mod:`torchgeo_earthsynth.vocabulary`) and a prompt per sample.

    Dataset format:

    * ``<root>/<split>/images/*.png``: RGB images
    * ``<root>/<split>/masks/*.png``: single-channel class-index masks (a 3-channel mask with
      equal channels is accepted)
    * ``<root>/<split>/<split>.jsonl`` (optional): ``file_name``, ``mask_name``, ``text``
      records of full samples and of single-category samples (category augmentation:
      ``category_images/`` holds copies of the full images, ``category_masks/`` the mask of
      one class, keeping its id). Paths are relative to the split folder; the released form
      ``.../<split>/images/X.png`` is accepted too.

    Without a JSONL, samples are the image/mask pairs of the same file name, prompts come from
    the masks, and single-category samples are made on the fly (the full image with the mask
    of one class), as the released category augmentation would.

    Sample keys: ``image`` float32 [3, H, W] in 0..255, ``mask`` int64 [H, W], ``prompt``,
    ``categories`` float32 multi-hot [67], ``source``.

    Bad input raises a ValueError naming the file (and JSONL line) and what was expected:
    records that are not JSON or lack a field, paths outside the split folder, missing,
    corrupt or truncated PNGs, image/mask size mismatches, mask ids outside the vocabulary.
    With ``strict=False`` such samples are skipped instead and counted in :attr:`skipped`:
    bad records when the dataset is built (with a one-line summary in the log), bad files
    when a sample is read (each logged once; the next readable sample takes its place, so
    no other sample is lost). Counts made in DataLoader workers stay in those workers.

    If you use this dataset in your research, please cite the following paper:

    * https://arxiv.org/abs/2505.12108

    .. versionadded:: 0.1
    """

    splits: ClassVar[tuple[str, ...]] = ('train', 'val')
    modes: ClassVar[tuple[str, ...]] = ('full', 'category', 'both')
    classes: ClassVar[tuple[str, ...]] = VOCABULARY
    repo_id: ClassVar[str] = 'jaychempan/EarthSynth-180K'

    def __init__(
        self,
        root: str | Path = 'data',
        split: Literal['train', 'val'] = 'train',
        mode: Literal['full', 'category', 'both'] = 'full',
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        download: bool = False,
        strict: bool = True,
    ) -> None:
        """Initialize a new EarthSynth180K instance.

        Args:
            root: root directory holding ``train/`` (and ``val/``).
            split: one of ``train`` or ``val``.
            mode: ``full`` scenes, single-``category`` samples, or ``both``.
            transforms: a function/transform that takes a sample dict and returns a
                transformed version.
            download: if True, fetch the corpus from the Hugging Face Hub when missing.
            strict: raise on bad records and files; if False, skip, count and report them.

        Raises:
            AssertionError: if ``split`` or ``mode`` is invalid.
            DatasetNotFoundError: if the data is not found and cannot be downloaded.
            ValueError: on a bad record when ``strict=True``.
        """
        assert split in self.splits, f'split must be one of {self.splits}, got {split!r}'
        assert mode in self.modes, f'mode must be one of {self.modes}, got {mode!r}'
        self.root = Path(root)
        self.split = split
        self.mode = mode
        self.transforms = transforms
        self.download = download
        self.strict = strict
        #: Bad records and unreadable samples skipped so far (``strict=False``), by reason.
        self.skipped: Counter[str] = Counter()
        self.split_dir = self.root / split
        self._unreadable: set[int] = set()
        self._verify()
        self._load_records()
        if not len(self):
            bad = f' ({sum(self.skipped.values())} bad ones skipped)' if self.skipped else ''
            raise EarthSynthNotFoundError(self, f'{self.split_dir} holds no {mode} samples{bad}')
        if self.skipped:
            logger.warning(
                '%s(%s, mode=%s): skipped %d bad record(s) and kept %d sample(s): %s',
                type(self).__name__,
                split,
                mode,
                sum(self.skipped.values()),
                len(self),
                ', '.join(f'{n} {reason}' for reason, n in sorted(self.skipped.items())),
            )

    # ------------------------------------------------------------------ finding the data
    def _present(self) -> bool:
        return all((self.split_dir / name).is_dir() for name in (layout.IMAGES, layout.MASKS))

    def _verify(self) -> None:
        """Find the split: extracted, else from downloaded archives, else download them."""
        if self._present():
            return
        archives = self._archives()
        if not archives and not self.download:
            raise EarthSynthNotFoundError(self)
        if not archives:
            from huggingface_hub import snapshot_download

            try:
                snapshot_download(
                    repo_id=self.repo_id, repo_type='dataset', local_dir=self.root / ARCHIVES
                )
            except Exception as error:
                raise EarthSynthNotFoundError(self, f'download failed: {error}') from error
            archives = self._archives()
        for base, parts in archives.items():
            named = next((s for s in self.splits if base.lower().endswith(s)), None)
            if named is None or not (self.root / named / layout.MASKS).is_dir():
                self._extract(base, parts)  # else extracted before
        for split in self.splits:
            split_dir = self.root / split
            if (split_dir / layout.MASKS).is_dir() and not layout.jsonl_path(split_dir).exists():
                layout.augment_split(split_dir, strict=self.strict)
        if not self._present():
            names = ', '.join(p.name for parts in archives.values() for p in parts)
            raise EarthSynthNotFoundError(
                self, f'the archives ({names or "none"}) hold no {self.split!r} split'
            )

    def _archives(self) -> dict[str, list[Path]]:
        """Zip archives under ``root/archives``, parts grouped and in order, by name."""
        folder = self.root / ARCHIVES
        groups: dict[str, list[Path]] = {}
        if folder.is_dir():
            for path in sorted(folder.rglob('*')):
                match = _ARCHIVE.match(path.name)
                if match and path.is_file() and '.cache' not in path.relative_to(folder).parts:
                    key = str(path.parent.relative_to(folder) / match['base'])
                    groups.setdefault(key, []).append(path)

        def order(path: Path) -> tuple[int, str]:
            part = _ARCHIVE.match(path.name)['part'] or ''  # type: ignore[index]
            return len(part), part.lower()  # part2 < part10, aa < ab

        return {key: sorted(parts, key=order) for key, parts in groups.items()}

    def _extract(self, base: str, parts: list[Path]) -> None:
        """Join the parts of one archive, extract it, move its split folders into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        if len(parts) == 1 and parts[0].name.lower().endswith('.zip'):
            archive, joined = parts[0], False
        else:
            archive, joined = self.root / f'.{Path(base).name}.zip.joined', True
            with archive.open('wb') as out:
                for part in parts:
                    with part.open('rb') as f:
                        shutil.copyfileobj(f, out, 1 << 24)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix='.extract-'))
        try:
            try:
                with zipfile.ZipFile(archive) as zf:
                    for name in zf.namelist():
                        if not (staging / name).resolve().is_relative_to(staging.resolve()):
                            raise ValueError(
                                f'{archive}: member {name!r} would extract outside {self.root}'
                            )
                    zf.extractall(staging)
            except zipfile.BadZipFile as error:
                names = ', '.join(p.name for p in parts)
                raise ValueError(
                    f'{archive}: not a zip archive ({error}); expected {names} to be (the '
                    'ordered parts of) one zip file'
                ) from error
            self._place(staging, Path(base).name, archive)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if joined:
                archive.unlink(missing_ok=True)

    def _place(self, staging: Path, base: str, archive: Path) -> None:
        """Move every folder holding ``images/`` and ``masks/`` to ``root/<split>``."""
        found, frontier = [], [staging]
        for _ in range(4):  # the archive root and up to three folders down
            deeper = []
            for folder in frontier:
                if (folder / layout.IMAGES).is_dir() and (folder / layout.MASKS).is_dir():
                    found.append(folder)
                else:
                    deeper += sorted(p for p in folder.iterdir() if p.is_dir())
            frontier = deeper
        if not found:
            raise ValueError(
                f'{archive}: holds no folder with {layout.IMAGES}/ and {layout.MASKS}/; '
                'expected the EarthSynth-180K layout'
            )
        for folder in found:
            split = folder.name if folder.name in self.splits else None
            split = split or next((s for s in self.splits if base.lower().endswith(s)), None)
            if split is None:
                raise ValueError(
                    f'{archive}: cannot tell the split of {folder.relative_to(staging)}; '
                    f'expected a folder or an archive named after one of {self.splits}'
                )
            _move_merge(folder, self.root / split)

    # ------------------------------------------------------------------ listing samples
    def _bad(self, reason: str, message: str) -> None:
        if self.strict:
            raise ValueError(message)
        self.skipped[reason] += 1
        logger.debug('skipping: %s', message)

    def _locate(self, raw: str, field: str, origin: str, listing: _Listing) -> str | None:
        """A JSONL path as a normalised path relative to the split folder, if it exists."""
        norm = posixpath.normpath(raw.replace('\\', '/'))
        candidates = []
        if not (posixpath.isabs(norm) or norm in ('.', '..') or norm.startswith('../')):
            candidates.append(norm)
        parts = norm.split('/')
        # released JSONLs hold the authors' paths: ./data/EarthSynth-180K/train/images/X.png
        if len(parts) >= 3 and parts[-3] == self.split and parts[-2] in layout.FOLDERS:
            candidates.append(f'{parts[-2]}/{parts[-1]}')
        for candidate in candidates:
            if listing.has(candidate):
                return candidate
        if candidates:
            self._bad(
                'missing files',
                f'{origin}: field "{field}" = {raw!r}: no such file in {self.split_dir}',
            )
        else:
            self._bad(
                'paths outside the split folder',
                f'{origin}: field "{field}" = {raw!r} points outside the split folder '
                f'{self.split_dir}; expected a path relative to it, such as "images/X.png"',
            )
        return None

    def _load_records(self) -> None:
        images: list[str] = []
        masks: list[str] = []
        prompts: list[str] = []
        categories: list[int] = []
        lines: list[int] = []

        def add(image: str, mask: str, prompt: str, category: int, line: int) -> None:
            images.append(image)
            masks.append(mask)
            prompts.append(prompt)
            categories.append(category)
            lines.append(line)

        jsonl = layout.jsonl_path(self.split_dir)
        self._jsonl = jsonl if jsonl.exists() else None
        rows = self._rows_from_jsonl(jsonl) if self._jsonl else self._rows_from_folders()
        # no category records (no JSONL, or one without them): make them from the full masks
        derive = self.mode != 'full' and not any(is_category for *_, is_category in rows)
        for image, mask, prompt, line, is_category in rows:
            ids: list[int] | None = self._class_ids(mask, line) if derive else []
            if ids is None:
                continue
            if self.mode == 'both' or (self.mode == 'category') == is_category:
                add(image, mask, prompt, -1, line)
            for class_id in ids:
                add(image, mask, prompt_from_ids([class_id]), class_id, line)
        # no per-sample Python objects: see _Strings
        self._images = _Strings(images)
        self._masks = _Strings(masks)
        self._prompts = _Strings(prompts)
        self._has_prompt = np.array([bool(p) for p in prompts], dtype=bool)
        self._categories = np.array(categories, dtype=np.int16)
        self._lines = np.array(lines, dtype=np.int64)

    def _rows_from_jsonl(self, jsonl: Path) -> list[tuple[str, str, str, int, bool]]:
        """``(image, mask, prompt, line, is category record)`` of each good JSONL record."""
        listing = _Listing(self.split_dir)
        rows = []
        expected = ', '.join(layout.REQUIRED_FIELDS)
        for number, line in layout.iter_jsonl(jsonl):
            origin = f'{jsonl} line {number}'
            try:
                entry = json.loads(line)
            except ValueError as error:
                self._bad(
                    'lines that are not JSON',
                    f'{origin}: not valid JSON ({error}); expected one JSON object per line',
                )
                continue
            if not isinstance(entry, dict):
                missing = list(layout.REQUIRED_FIELDS)
            else:
                missing = [k for k in layout.REQUIRED_FIELDS if not isinstance(entry.get(k), str)]
            if missing:
                self._bad(
                    'records missing fields',
                    f'{origin}: missing or non-string field(s) {", ".join(missing)}; expected '
                    f'a JSON object with string fields {expected}',
                )
                continue
            is_category = layout.CATEGORY_IMAGES in entry['file_name'].replace('\\', '/')
            if self.mode == 'full' and is_category:
                continue  # not needed: leave its files unchecked
            image = self._locate(entry['file_name'], 'file_name', origin, listing)
            mask = self._locate(entry['mask_name'], 'mask_name', origin, listing)
            if image is not None and mask is not None:
                rows.append((image, mask, entry['text'], number, is_category))
        return rows

    def _rows_from_folders(self) -> list[tuple[str, str, str, int, bool]]:
        """``(image, mask, '', 0, False)`` for each mask with an image of the same name."""
        mask_dir = self.split_dir / layout.MASKS
        images = set(os.listdir(self.split_dir / layout.IMAGES))
        rows = []
        for name in sorted(os.listdir(mask_dir)):
            if not name.lower().endswith('.png'):
                continue
            if name not in images:
                self._bad(
                    'missing files',
                    f'{mask_dir / name}: no image of the same name in '
                    f'{self.split_dir / layout.IMAGES}',
                )
                continue
            rows.append((f'{layout.IMAGES}/{name}', f'{layout.MASKS}/{name}', '', 0, False))
        return rows

    def _class_ids(self, mask: str, line: int) -> list[int] | None:
        """Foreground ids of a mask file (for on-the-fly category samples), None if bad."""
        try:
            array = layout.read_mask_png(self.split_dir / mask)
        except ValueError as error:
            self._bad('unreadable samples', f'{error}{self._where(line)}')
            return None
        return [int(i) for i in np.flatnonzero(np.bincount(array.ravel())) if i]

    # ------------------------------------------------------------------ records
    def _where(self, line: int) -> str:
        return f' (from {self._jsonl} line {line})' if self._jsonl is not None else ''

    def _record(self, index: int) -> Record:
        index = range(len(self))[index]
        category = int(self._categories[index])
        line = int(self._lines[index])
        mask = self.split_dir / self._masks[index]
        return Record(
            image=self.split_dir / self._images[index],
            mask=mask,
            prompt=self._prompts[index] if self._has_prompt[index] else None,
            category=category if category >= 0 else None,
            origin=f'{self._jsonl} line {line}' if self._jsonl is not None else str(mask),
        )

    @property
    def records(self) -> Sequence[Record]:
        """The :class:`Record` of every sample, in dataset order."""
        return _RecordView(self)

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _open(path: str, where: str) -> Image.Image:
        try:
            return Image.open(path)
        except _DECODE_ERRORS as error:
            raise ValueError(f'{path}{where}: cannot open as a PNG image ({error})') from error

    @staticmethod
    def _decode(image: Image.Image, path: str, where: str, rgb: bool) -> np.ndarray:
        try:
            image.load()
            if rgb and image.mode != 'RGB':
                image = image.convert('RGB')
            return np.asarray(image)
        except _DECODE_ERRORS as error:
            raise ValueError(
                f'{path}{where}: cannot decode the PNG ({error}); the file is damaged or truncated'
            ) from error

    def _read_mask(self, path: Path) -> np.ndarray:
        """Decode and check a mask PNG (see :func:`layout.read_mask_png`)."""
        return layout.read_mask_png(path)

    def _load(self, index: int) -> dict[str, Any]:
        split = str(self.split_dir)
        image_name = self._images[index]
        image_path = os.path.join(split, image_name)
        mask_path = os.path.join(split, self._masks[index])
        where = self._where(int(self._lines[index]))
        with self._open(image_path, where) as image_file, self._open(mask_path, where) as mask_file:
            if image_file.size != mask_file.size:
                raise ValueError(
                    f'{image_path}{where}: the image is {image_file.size[0]}x'
                    f'{image_file.size[1]} but its mask {mask_path} is {mask_file.size[0]}x'
                    f'{mask_file.size[1]}; expected equal sizes'
                )
            image = self._decode(image_file, image_path, where, rgb=True)
            mask = self._decode(mask_file, mask_path, where, rgb=False)
        mask = layout.check_mask(mask, f'{mask_path}{where}')
        category = int(self._categories[index])
        if category >= 0:  # single-category sample made on the fly
            mask = np.where(mask == category, mask, 0)
        # one copy each, into the layouts the tensors need (PIL's arrays are read-only)
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        mask_t = torch.from_numpy(mask.astype(np.int64))
        present = class_histogram(mask_t[None])[0] > 0
        if self._has_prompt[index]:
            prompt = self._prompts[index]
        else:
            prompt = prompt_from_ids(torch.nonzero(present).view(-1).tolist())
        return {
            'image': image_t,
            'mask': mask_t,
            'prompt': prompt,
            'categories': present.float(),
            'source': source_from_stem(posixpath.basename(image_name)),
        }

    def __len__(self) -> int:
        """The number of samples.

        Returns:
            Length of the dataset.
        """
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return one sample.

        Args:
            index: index of the sample (negative counts from the end).

        Returns:
            The sample dict, after ``transforms``.

        Raises:
            IndexError: if ``index`` is out of range.
            ValueError: if the files are damaged or inconsistent and ``strict=True``.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} is out of range for {len(self)} samples')
        index %= len(self)
        sample = self._load(index) if self.strict else self._load_readable(index)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _load_readable(self, index: int) -> dict[str, Any]:
        """Load ``index`` or, if it cannot be read, the next readable sample."""
        for step in range(len(self)):
            i = (index + step) % len(self)
            if i in self._unreadable:
                continue
            try:
                return self._load(i)
            except ValueError as error:
                self._unreadable.add(i)
                self.skipped['unreadable samples'] += 1
                logger.warning(
                    '%s(%s): skipped an unreadable sample (%d so far): %s',
                    type(self).__name__,
                    self.split,
                    len(self._unreadable),
                    error,
                )
        raise ValueError(f'{self.split_dir}: none of the {len(self)} samples can be read')

    # ------------------------------------------------------------------ plotting
    def plot(
        self, sample: dict[str, Any], show_titles: bool = True, suptitle: str | None = None
    ) -> Figure:
        """Plot a sample: image, coloured mask with a legend of present classes, prompt.

        Args:
            sample: a sample returned by :meth:`__getitem__` (may hold ``prediction``).
            show_titles: flag indicating whether to show titles above each panel.
            suptitle: optional string to use as a suptitle.

        Returns:
            A matplotlib Figure with the rendered sample.
        """
        return plot_sample(sample, show_titles=show_titles, suptitle=suptitle)


def _move_merge(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, merging into folders that already exist."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return
    for child in source.iterdir():
        if child.is_dir() and (target / child.name).is_dir():
            _move_merge(child, target / child.name)
        else:
            os.replace(child, target / child.name)


def plot_sample(
    sample: dict[str, Any], show_titles: bool = True, suptitle: str | None = None
) -> Figure:
    """Plot an EarthSynth sample dict (shared by every dataset of this package).

    Args:
        sample: dict with ``image`` [3, H, W] 0..255, ``mask`` [H, W], optional ``prompt``
            and ``prediction`` [H, W].
        show_titles: flag indicating whether to show titles above each panel.
        suptitle: optional string to use as a suptitle.

    Returns:
        A matplotlib Figure: the image, the coloured mask (and prediction) with a legend of
        the classes present, and the prompt below.
    """
    tensor = torch.as_tensor(sample['image']).detach().cpu().float()
    image = tensor.permute(1, 2, 0).clamp(0, 255).numpy() / 255
    masks = [('Mask', sample['mask'])]
    if 'prediction' in sample:
        masks.append(('Prediction', sample['prediction']))
    fig, axs = plt.subplots(1, 1 + len(masks), figsize=(4 * (1 + len(masks)), 4.6))
    axs[0].imshow(image)
    present: set[int] = set()
    for ax, (title, mask) in zip(axs[1:], masks):
        mask = torch.as_tensor(mask).detach().cpu()
        ax.imshow(colorize(mask), interpolation='nearest')
        present |= {int(i) for i in torch.unique(mask).tolist() if 0 <= i < NUM_CLASSES}
        if show_titles:
            ax.set_title(title)
    for ax in axs:
        ax.axis('off')
    if show_titles:
        axs[0].set_title('Image')
    handles = [Patch(color=PALETTE[i] / 255, label=VOCABULARY[i]) for i in sorted(present)]
    axs[-1].legend(handles=handles, loc='center left', bbox_to_anchor=(1.0, 0.5), fontsize=8)
    if 'prompt' in sample:
        fig.text(0.5, 0.02, str(sample['prompt']), ha='center', fontsize=9, wrap=True)
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
