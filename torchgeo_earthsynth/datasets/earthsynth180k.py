# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth-180K dataset."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image
from torch import Tensor
from torchgeo.datasets import DatasetNotFoundError, NonGeoDataset

from ..vocabulary import NUM_CLASSES, PALETTE, VOCABULARY, colorize, prompt_from_mask
from ..vocabulary import source_from_stem as _source
from . import layout

logger = logging.getLogger(__name__)


class EarthSynthNotFoundError(DatasetNotFoundError):
    """TorchGeo's ``DatasetNotFoundError`` that also says where we looked and how to get data.

    .. versionadded:: 0.1
    """

    def __init__(self, dataset: EarthSynth180K, looked: Path) -> None:
        super().__init__(dataset)
        self.args = (
            f'{self.args[0]} Looked for {looked / layout.IMAGES} and {looked / layout.MASKS}. '
            f'Get the corpus with download=True (Hugging Face dataset {dataset.repo_id!r}), '
            'build one with `earthsynth build-corpus`, or use EarthSynthMini.',
        )


@dataclass(frozen=True)
class _Record:
    image: Path
    mask: Path
    prompt: str | None  # None: derive from the mask
    category: int | None  # on-the-fly single-category record of this class id
    origin: str  # where the record came from, for error messages


class EarthSynth180K(NonGeoDataset):
    """EarthSynth-180K: remote-sensing images with semantic masks and prompts.

    The corpus of `EarthSynth <https://arxiv.org/abs/2505.12108>`__: 512x512 RGB tiles from
    DeepGlobe, LoveDA, OpenEarthMap and SAMRS (FAIR1M/DIOR/DOTA) with class-index masks over a
    67-class vocabulary (:mod:`torchgeo_earthsynth.vocabulary`) and a prompt per sample.

    Dataset format:

    * ``<root>/<split>/images/*.png``: RGB images
    * ``<root>/<split>/masks/*.png``: single-channel class-index masks
    * ``<root>/<split>/<split>.jsonl`` (optional): ``file_name``, ``mask_name``, ``text``
      records for full samples and single-category samples (category augmentation)

    Sample keys: ``image`` float32 [3, H, W] in 0..255, ``mask`` int64 [H, W], ``prompt``,
    ``categories`` float32 multi-hot [67], ``source``.

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
            DatasetNotFoundError: if the data is not found and ``download=False``.
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
        self.skipped: Counter[str] = Counter()
        self.split_dir = self.root / split
        self._verify()
        self.records = self._load_records()
        if self.skipped:
            logger.warning(
                '%s(%s): skipped %d bad record(s): %s', type(self).__name__, split,
                sum(self.skipped.values()), ', '.join(f'{n} {k}' for k, n in self.skipped.items())
            )  # fmt: skip

    # ------------------------------------------------------------------ records
    def _verify(self) -> None:
        if (self.split_dir / layout.IMAGES).is_dir() and (self.split_dir / layout.MASKS).is_dir():
            return
        if not self.download:
            raise EarthSynthNotFoundError(self, self.split_dir)
        self._download()
        if not (self.split_dir / layout.IMAGES).is_dir():
            raise EarthSynthNotFoundError(self, self.split_dir)

    def _download(self) -> None:
        """Fetch the dataset repo, join the zip parts, extract, and category-augment."""
        from huggingface_hub import snapshot_download

        hub_dir = Path(snapshot_download(repo_id=self.repo_id, repo_type='dataset',
                                         local_dir=self.root / '.hub'))  # fmt: skip
        archives: dict[str, list[Path]] = {}
        for path in sorted(hub_dir.rglob('*.zip*')):
            base = path.name.split('.zip')[0]
            archives.setdefault(base, []).append(path)
        for base, parts in archives.items():
            archive = parts[0]
            if len(parts) > 1 or not parts[0].name.endswith('.zip'):
                archive = self.root / f'{base}.zip'
                with archive.open('wb') as out:
                    for part in sorted(parts):
                        with part.open('rb') as f:
                            shutil.copyfileobj(f, out)
            self._extract(archive)
            if archive.parent == self.root:
                archive.unlink()
        for split in self.splits:
            split_dir = self.root / split
            if (split_dir / layout.MASKS).is_dir() and not layout.jsonl_path(split_dir).exists():
                layout.augment_split(split_dir)

    def _extract(self, archive: Path) -> None:
        root = self.root.resolve()
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for name in names:
                if not (root / name).resolve().is_relative_to(root):
                    raise ValueError(f'{archive}: member {name!r} would extract outside {root}')
            zf.extractall(root)
        # archives that wrap everything in one top-level folder
        tops = {n.split('/')[0] for n in names}
        if len(tops) == 1 and (root / next(iter(tops)) / self.split).is_dir():
            top = root / next(iter(tops))
            for child in top.iterdir():
                if not (root / child.name).exists():
                    child.rename(root / child.name)

    def _bad(self, reason: str, message: str) -> None:
        if self.strict:
            raise ValueError(message)
        self.skipped[reason] += 1
        logger.debug('skipping: %s', message)

    def _inside(self, relative: str, origin: str) -> Path | None:
        base = self.split_dir.resolve()
        path = (self.split_dir / relative).resolve()
        if not path.is_relative_to(base):
            self._bad('paths outside the split folder',
                      f'{origin}: path {relative!r} escapes the split folder {self.split_dir}')
            return None
        if not path.is_file():
            self._bad('missing files', f'{origin}: file {relative!r} does not exist in '
                      f'{self.split_dir}')  # fmt: skip
            return None
        return path

    def _load_records(self) -> list[_Record]:
        jsonl = layout.jsonl_path(self.split_dir)
        if jsonl.exists():
            return self._records_from_jsonl(jsonl)
        return self._records_from_folders()

    def _records_from_jsonl(self, jsonl: Path) -> list[_Record]:
        records = []
        for number, line in layout.iter_jsonl(jsonl):
            origin = f'{jsonl} line {number}'
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                self._bad('lines that are not JSON', f'{origin}: not valid JSON ({error.msg})')
                continue
            missing = [k for k in layout.REQUIRED_FIELDS
                       if not isinstance(entry, dict) or not isinstance(entry.get(k), str)]  # fmt: skip
            if missing:
                self._bad('records missing fields',
                          f'{origin}: missing or non-string field(s) {missing}; expected '
                          f'{list(layout.REQUIRED_FIELDS)}')  # fmt: skip
                continue
            is_category = layout.CATEGORY_IMAGES in Path(entry['file_name']).parts
            if (self.mode == 'full' and is_category) or (self.mode == 'category' and not is_category):
                continue
            image = self._inside(entry['file_name'], f'{origin}, field "file_name"')
            mask = self._inside(entry['mask_name'], f'{origin}, field "mask_name"')
            if image is not None and mask is not None:
                records.append(_Record(image, mask, entry['text'], None, origin))
        return records

    def _records_from_folders(self) -> list[_Record]:
        records = []
        for mask in sorted((self.split_dir / layout.MASKS).glob('*.png')):
            image = self.split_dir / layout.IMAGES / mask.name
            if not image.exists():
                self._bad('missing files', f'{mask}: no matching image {image}')
                continue
            if self.mode in ('full', 'both'):
                records.append(_Record(image, mask, None, None, str(mask)))
            if self.mode in ('category', 'both'):
                ids = np.unique(self._read_mask(mask))
                records.extend(_Record(image, mask, None, int(c), str(mask)) for c in ids if c)
        return records

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _open(path: Path) -> Image.Image:
        try:
            img = Image.open(path)
            img.load()
        except (OSError, SyntaxError) as error:
            raise ValueError(f'{path}: cannot decode PNG ({error})') from error
        return img

    def _read_image(self, path: Path) -> np.ndarray:
        img = self._open(path)
        if img.mode != 'RGB':
            img = img.convert('RGB')
        return np.array(img)

    def _read_mask(self, path: Path) -> np.ndarray:
        mask = np.array(self._open(path))
        if mask.ndim == 3:
            if not (np.array_equal(mask[..., 0], mask[..., 1])
                    and np.array_equal(mask[..., 0], mask[..., 2])):  # fmt: skip
                raise ValueError(f'{path}: a 3-channel mask must have equal channels '
                                 '(expected a class-index mask)')  # fmt: skip
            mask = mask[..., 0]
        if mask.size and int(mask.max()) >= NUM_CLASSES:
            raise ValueError(f'{path}: mask id {int(mask.max())} is outside the vocabulary '
                             f'[0, {NUM_CLASSES - 1}]')  # fmt: skip
        return mask

    def _load(self, record: _Record) -> dict[str, Any]:
        image = self._read_image(record.image)
        mask = self._read_mask(record.mask)
        if image.shape[:2] != mask.shape:
            raise ValueError(f'{record.origin}: image {record.image} is {image.shape[1]}x'
                             f'{image.shape[0]} but mask {record.mask} is {mask.shape[1]}x'
                             f'{mask.shape[0]}; expected equal sizes')  # fmt: skip
        if record.category is not None:
            keep = mask == record.category
            image = np.where(keep[..., None], image, 0)
            mask = np.where(keep, mask, 0)
        mask_t = torch.from_numpy(mask.astype(np.int64))
        counts = torch.bincount(mask_t.view(-1), minlength=NUM_CLASSES)
        return {
            'image': torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float(),
            'mask': mask_t,
            'prompt': record.prompt if record.prompt is not None else prompt_from_mask(mask),
            'categories': (counts > 0).float(),
            'source': _source(record.image.stem),
        }

    def __len__(self) -> int:
        """The number of samples."""
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return one sample.

        With ``strict=False`` an unreadable sample is counted in :attr:`skipped` and the next
        readable one is returned in its place.

        Args:
            index: index of the sample.

        Returns:
            The sample dict.

        Raises:
            ValueError: if the files are corrupt or inconsistent and ``strict=True``.
        """
        for offset in range(len(self.records)):
            record = self.records[(index + offset) % len(self.records)]
            try:
                sample = self._load(record)
            except ValueError as error:
                if self.strict:
                    raise
                self.skipped['unreadable samples'] += 1
                logger.warning('%s: skipped, %s', type(self).__name__, error)
                continue
            if self.transforms is not None:
                sample = self.transforms(sample)
            return sample
        raise ValueError(f'{self.split_dir}: no readable sample left')

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
        A matplotlib Figure.
    """
    image = sample['image'].detach().cpu().permute(1, 2, 0).clamp(0, 255).numpy() / 255
    masks = [('Mask', sample['mask'])]
    if 'prediction' in sample:
        masks.append(('Prediction', sample['prediction']))
    fig, axs = plt.subplots(1, 1 + len(masks), figsize=(4 * (1 + len(masks)), 4.6))
    axs[0].imshow(image)
    present: set[int] = set()
    for ax, (title, mask) in zip(axs[1:], masks):
        mask = torch.as_tensor(mask).detach().cpu()
        ax.imshow(colorize(mask), interpolation='nearest')
        present |= set(torch.unique(mask).tolist())
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
