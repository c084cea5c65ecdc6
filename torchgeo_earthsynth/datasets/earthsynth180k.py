# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth-180K dataset."""

from __future__ import annotations

import json
import logging
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, NamedTuple, overload

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..compat import DatasetNotFoundError, NonGeoDataset
from ..conditions import METADATA_FIELDS, NUM_METADATA, metadata_from_record
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
from .archives import extract_archive, find_archives

logger = logging.getLogger(__name__)

#: Folder under ``root`` where ``download=True`` puts the Hugging Face snapshot.
ARCHIVES: Final = 'archives'


#: Ground sampling distance (m/px) by source, where the source states one value: DeepGlobe
#: Land Cover "50 cm pixel resolution" (Demir et al., 2018), LoveDA "0.3 m" (Wang et al.,
#: 2021). OpenEarthMap (0.25-0.5 m), FAIR1M (0.3-0.8 m), DIOR (0.5-30 m) and DOTA (varies by
#: sensor) state ranges, so their GSD is unknown (NaN), as is every unknown prefix's. Assumes
#: the tiles are crops at the source's resolution (their stems carry a crop index); a JSONL
#: ``metadata`` object overrides this table.
SOURCE_GSD: Final[Mapping[str, float]] = MappingProxyType({'DeepGlobe': 0.5, 'LoveDA': 0.3})


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


class _Row(NamedTuple):
    """A sample found when listing the split, before on-the-fly category samples."""

    image: str
    mask: str
    prompt: str
    line: int
    is_category: bool
    metadata: np.ndarray | None


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
    """Which files exist in a split, read once per folder instead of one stat per file.

    Also tells whether a file resolves inside the dataset, symlinks included, at the cost
    of one ``realpath`` per folder and per symlink (not per file).
    """

    def __init__(self, base: Path, bounds: Sequence[Path]) -> None:
        self.base = base
        self.bounds = [os.path.realpath(b) for b in bounds]
        #: folder -> {file name: is a symlink}
        self.folders: dict[str, dict[str, bool]] = {}
        self.real_folders: dict[str, str] = {}

    def names(self, folder: str) -> dict[str, bool]:
        if folder not in self.folders:
            try:
                with os.scandir(self.base / folder) as entries:
                    self.folders[folder] = {e.name: e.is_symlink() for e in entries}
            except OSError:
                self.folders[folder] = {}
        return self.folders[folder]

    def has(self, relative: str) -> bool:
        folder, _, name = relative.rpartition('/')
        return name in self.names(folder)

    def outside(self, relative: str) -> str | None:
        """The real path of an existing file if it resolves outside the dataset, else None."""
        folder, _, name = relative.rpartition('/')
        if folder not in self.real_folders:
            self.real_folders[folder] = os.path.realpath(self.base / folder)
        real = os.path.join(self.real_folders[folder], name)
        if self.names(folder).get(name):
            real = os.path.realpath(real)
        inside = any(real.startswith(bound + os.sep) for bound in self.bounds)
        return None if inside else real


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
    ``categories`` float32 multi-hot [67], ``source``, ``metadata`` float32 [7]
    (:data:`~torchgeo_earthsynth.conditions.METADATA_FIELDS`, NaN where unknown): from the
    record's ``metadata`` object when it has one, else the GSD of the source where the source
    states one (:data:`SOURCE_GSD`).

    Bad input raises a ValueError naming the file (and JSONL line) and what was expected:
    records that are not JSON, lack a field, hold bad ``metadata`` or repeat an earlier
    record; paths outside the split folder, or resolving outside the dataset root through a
    symlink; missing, corrupt, truncated or oversized (decompression bomb) files; masks that
    are not PNG files (lossy formats change class ids; images may be any format PIL reads)
    or have transparent pixels; image/mask size mismatches; mask ids outside the vocabulary;
    a JSONL that is empty or a directory.
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
    #: GSD (m/px) by source for records without a ``metadata`` object.
    source_gsd: ClassVar[Mapping[str, float]] = SOURCE_GSD

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
        archives = find_archives(self.root / ARCHIVES)
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
            archives = find_archives(self.root / ARCHIVES)
        for base, parts in archives.items():
            named = next((s for s in self.splits if base.lower().endswith(s)), None)
            if named is None or not (self.root / named / layout.MASKS).is_dir():
                extract_archive(self.root, base, parts, self.splits)  # else extracted before
        for split in self.splits:
            split_dir = self.root / split
            if (split_dir / layout.MASKS).is_dir() and not layout.jsonl_path(split_dir).exists():
                layout.augment_split(split_dir, strict=self.strict)
        if not self._present():
            names = ', '.join(p.name for parts in archives.values() for p in parts)
            raise EarthSynthNotFoundError(
                self, f'the archives ({names or "none"}) hold no {self.split!r} split'
            )

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
                real = listing.outside(candidate)
                if real is None:
                    return candidate
                self._bad(
                    'paths outside the dataset root',
                    f'{origin}: field "{field}" = {raw!r} resolves to {real}, outside the '
                    f'dataset root {self.root}; expected files (and symlinks) inside it',
                )
                return None
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
        metadata: list[np.ndarray] = []

        jsonl = layout.jsonl_path(self.split_dir)
        self._jsonl = jsonl if jsonl.exists() else None
        rows = self._rows_from_jsonl(jsonl) if self._jsonl else self._rows_from_folders()
        # no category records (no JSONL, or one without them): make them from the full masks
        derive = self.mode != 'full' and not any(row.is_category for row in rows)
        for row in rows:
            ids: list[int] | None = self._class_ids(row.mask, row.line) if derive else []
            if ids is None:
                continue
            known = row.metadata if row.metadata is not None else self._source_metadata(row.image)
            keep = (
                [-1] if self.mode == 'both' or (self.mode == 'category') == row.is_category else []
            )
            for class_id in keep + ids:
                images.append(row.image)
                masks.append(row.mask)
                prompts.append(row.prompt if class_id < 0 else prompt_from_ids([class_id]))
                categories.append(class_id)
                lines.append(row.line)
                metadata.append(known)
        # no per-sample Python objects: see _Strings
        self._images = _Strings(images)
        self._masks = _Strings(masks)
        self._prompts = _Strings(prompts)
        self._has_prompt = np.array([bool(p) for p in prompts], dtype=bool)
        self._categories = np.array(categories, dtype=np.int16)
        self._lines = np.array(lines, dtype=np.int64)
        self._metadata = np.stack(metadata) if metadata else np.zeros((0, NUM_METADATA), np.float32)

    def _source_metadata(self, image: str) -> np.ndarray:
        """Metadata known from a file stem's source alone: its GSD (see :data:`SOURCE_GSD`)."""
        metadata = np.full(NUM_METADATA, np.nan, dtype=np.float32)
        gsd = self.source_gsd.get(source_from_stem(posixpath.basename(image)))
        if gsd is not None:
            metadata[METADATA_FIELDS.index('gsd')] = gsd
        return metadata

    def _record_metadata(
        self, entry: dict[str, Any], origin: str
    ) -> tuple[bool, np.ndarray | None]:
        """``(good, float32 [7] or None when absent)`` from a record's ``metadata`` object."""
        value = entry.get('metadata')
        if value is None:
            return True, None
        try:
            if not isinstance(value, dict):
                raise ValueError(f'expected a JSON object, got {value!r}')
            return True, metadata_from_record(value).numpy()
        except ValueError as error:
            self._bad('records with bad metadata', f'{origin}: field "metadata": {error}')
            return False, None

    def _rows_from_jsonl(self, jsonl: Path) -> list[_Row]:
        """The good records of the JSONL, each sample once."""
        listing = _Listing(self.split_dir, (self.root, self.split_dir))
        rows = []
        first_line: dict[tuple[str, str], int] = {}
        expected = ', '.join(layout.REQUIRED_FIELDS)
        lines = list(layout.iter_jsonl(jsonl))
        if not lines:
            raise ValueError(
                f'{jsonl} is empty; expected one JSON record per line ({expected}), or no '
                f'JSONL at all to read the pairs in {layout.IMAGES}/ and {layout.MASKS}/'
            )
        for number, line in lines:
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
            good, metadata = self._record_metadata(entry, origin)
            if image is None or mask is None or not good:
                continue
            if (image, mask) in first_line:
                self._bad(
                    'duplicate records',
                    f'{origin}: repeats the sample of line {first_line[image, mask]} '
                    f'({image}, {mask}); expected each sample once',
                )
                continue
            first_line[image, mask] = number
            rows.append(_Row(image, mask, entry['text'], number, is_category, metadata))
        return rows

    def _rows_from_folders(self) -> list[_Row]:
        """A row for each mask with an image of the same name."""
        listing = _Listing(self.split_dir, (self.root, self.split_dir))
        images = listing.names(layout.IMAGES)
        rows = []
        for name in sorted(listing.names(layout.MASKS)):
            if not name.lower().endswith('.png'):
                continue
            if name not in images:
                self._bad(
                    'missing files',
                    f'{self.split_dir / layout.MASKS / name}: no image of the same name in '
                    f'{self.split_dir / layout.IMAGES}',
                )
                continue
            image, mask = f'{layout.IMAGES}/{name}', f'{layout.MASKS}/{name}'
            real = listing.outside(image) or listing.outside(mask)
            if real is not None:
                self._bad(
                    'paths outside the dataset root',
                    f'{self.split_dir / layout.MASKS / name}: its image or mask resolves to '
                    f'{real}, outside the dataset root {self.root}; expected files (and '
                    'symlinks) inside it',
                )
                continue
            rows.append(_Row(image, mask, '', 0, False, None))
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
    def _read_mask(self, path: Path) -> np.ndarray:
        """Decode and check a mask PNG (see :func:`layout.read_mask_png`)."""
        return layout.read_mask_png(path)

    def _load(self, index: int) -> dict[str, Any]:
        split = str(self.split_dir)
        image_name = self._images[index]
        image_path = os.path.join(split, image_name)
        mask_path = os.path.join(split, self._masks[index])
        where = self._where(int(self._lines[index]))
        with (
            layout.open_image(image_path, where) as image_file,
            layout.open_image(mask_path, where) as mask_file,
        ):
            layout.require_png(mask_file, f'{mask_path}{where}')
            if image_file.size != mask_file.size:
                raise ValueError(
                    f'{image_path}{where}: the image is {image_file.size[0]}x'
                    f'{image_file.size[1]} but its mask {mask_path} is {mask_file.size[0]}x'
                    f'{mask_file.size[1]}; expected equal sizes'
                )
            image = layout.decode_image(image_file, image_path, where, rgb=True)
            mask = layout.decode_image(mask_file, mask_path, where)
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
            'metadata': torch.from_numpy(self._metadata[index].copy()),
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
