# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""EarthSynth-180K dataset."""

from __future__ import annotations

import logging
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal

import numpy as np
import torch
from matplotlib.figure import Figure

from torchgeo_earthsynth.boxes.records import check_boxes
from torchgeo_earthsynth.compat import (
    DETECTION_BOXES,
    DETECTION_LABELS,
    DatasetNotFoundError,
    NonGeoDataset,
)
from torchgeo_earthsynth.datasets import layout
from torchgeo_earthsynth.datasets.archives import extract_archive, find_archives
from torchgeo_earthsynth.datasets.plotting import plot_sample
from torchgeo_earthsynth.datasets.records import Record, _RecordListing
from torchgeo_earthsynth.vocabulary import (
    VOCABULARY,
    class_histogram,
    prompt_from_ids,
    source_from_stem,
)

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


class EarthSynth180K(_RecordListing, NonGeoDataset):
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
    states one (:data:`SOURCE_GSD`). A sample generated from detection boxes (a bank sample
    whose record has ``bbox_xyxy`` and ``bbox_classes``) also has them under TorchGeo's
    detection keys: ``bbox_xyxy`` float32 [N, 4] in pixels and ``label`` int64 [N]
    vocabulary ids (a single-category sample: the boxes of its class).

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
        if not len(self) and self.skipped:  # data found, all of it bad: not a download matter
            jsonl = layout.jsonl_path(self.split_dir)
            source = jsonl if jsonl.is_file() else self.split_dir
            reasons = ', '.join(f'{n} {reason}' for reason, n in sorted(self.skipped.items()))
            raise ValueError(
                f'{source}: every one of its records was skipped ({reasons}); no {mode} samples '
                'left (strict=True stops at the first bad one, naming its line)'
            )
        if not len(self):
            raise EarthSynthNotFoundError(self, f'{self.split_dir} holds no {mode} samples')
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
        sample = {
            'image': image_t,
            'mask': mask_t,
            'prompt': prompt,
            'categories': present.float(),
            'source': source_from_stem(posixpath.basename(image_name)),
            'metadata': torch.from_numpy(self._metadata[index].copy()),
        }
        found = self.exact_boxes(index)
        if found is not None:  # a sample generated from boxes: they are its exact label
            height, width = mask.shape
            boxes, labels = check_boxes(*found, (height, width), f'{image_path}{where}')
            sample |= {DETECTION_BOXES: boxes, DETECTION_LABELS: labels}
        return sample

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


__all__ = (
    'ARCHIVES',
    'SOURCE_GSD',
    'EarthSynth180K',
    'EarthSynthNotFoundError',
    'Record',
    'plot_sample',
)
