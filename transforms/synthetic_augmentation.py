# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Synthetic data augmentation of downstream training batches (the batch module).

Its parts live next to it: where samples come from (:mod:`.synthetic_sources`), how each task's
labels and conditions are made (:mod:`.synthetic_labels`), which rows are drawn from where
(:mod:`.synthetic_draws`), how online rows are generated and filtered
(:mod:`.synthetic_generation`), the pixel scale and bands (:mod:`.synthetic_scale`),
how rows go into the batch (:mod:`.synthetic_rows`) and how it is attached to training
(:mod:`.synthetic_callback`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import torch
from torch import nn

from torchgeo_earthsynth.datasets import EarthSynth180K
from torchgeo_earthsynth.encodings.registry import DatasetEncoding, resolve_encoding
from torchgeo_earthsynth.rfilter.protocol import SampleFilter
from torchgeo_earthsynth.synthesis.synthesizer import Synthesizer

from .synthetic_bands import BandMap
from .synthetic_draws import Batch, SyntheticDraws
from .synthetic_geo import GeoMetadata
from .synthetic_labels import LabelTables, rasterize_boxes
from .synthetic_rows import BANK, GENERATED, REAL, SyntheticPlan
from .synthetic_scale import registered_dataset
from .synthetic_sources import (
    BankLike,
    SamplePools,
    SynthesizerLoader,
    Task,
    check_options,
    check_sources,
)

#: Keys of :attr:`SyntheticAugmentation.stats`.
STAT_KEYS: Final[tuple[str, ...]] = (
    'seen',
    'replaced',
    'appended',
    'dropped_by_filter',
    'from_bank',
    'generated',
    'unavailable',
    'added_to_bank',
)

#: The name this module gave :class:`~torchgeo_earthsynth.rfilter.SampleFilter`.
FilterLike = SampleFilter


class SyntheticAugmentation(SyntheticDraws):
    """Swap or append synthetic samples with exact labels into downstream training batches.

    A batch-level module for a TorchGeo datamodule's ``train_aug`` slot. It works on raw
    batches (images in 0..255, as collated, on the device) and then runs ``then``, the
    datamodule's own augmentation (normalisation, flips...), so switching it on changes
    nothing else about the batch. To use it with any TorchGeo datamodule::

        dm = LoveDADataModule(root='data/loveda', batch_size=16)
        synthetic = SyntheticAugmentation(LoveDA.classes, dataset='LoveDA', source='bank',
                                          bank=SyntheticBank('outputs/bank'))
        attach(dm, synthetic)  # synthetic.then = dm.train_aug or dm.aug; dm.train_aug = synthetic

    How a dataset encodes its samples (the mask value of each class, no-data values, the
    vocabulary id of each class, the image's bands and pixel range) comes from the registry
    (:data:`~torchgeo_earthsynth.encodings.ENCODINGS`; ``earthsynth datasets`` lists
    it): ``dataset=`` names it, or :func:`attach` finds it from the datamodule. Other datasets
    give ``classes`` in mask-value order (and ``overrides``). At :func:`attach` the bands and
    scale are checked against the datamodule (multispectral datasets: select the RGB bands);
    synthetic 0..255 RGB is multiplied by ``image_scale`` (the registry's, or given) before it
    goes into the batch.

    A multispectral generator declares its bands (a ``bands`` attribute, a
    :class:`~torchgeo_earthsynth.encodings.bands.SpectralBands`; every band generated in
    0..255). Its bands must then cover those the dataset loads (EuroSAT's ``bands`` option,
    else the dataset's default bands, e.g. Potsdam's R, G, B, IR or Vaihingen's IR, R, G):
    each dataset band gets its generator band, in the dataset's order, converted 0..255 ->
    physical units -> pixels (x the registry's ``pixels_per_unit``, or ``image_scale``),
    clamped to the pixel range (:class:`~.synthetic_bands.BandMap`, :attr:`band_map`).
    Bank samples stay RGB 0..255.

    With probability ``p`` each sample gets a synthetic counterpart that replaces it
    (``mode='replace'``) or is appended to the batch (``mode='append'``). Its label is exact:

    * ``segmentation``: online, the sample's own mask mapped to vocabulary ids (by the
      dataset's encoding) is the ControlNet condition
      and stays the label; with ``cf_comp`` the conditions are first recomposed
      counterfactually (e.g. by
      :class:`~torchgeo_earthsynth.transforms.cf_comp.CounterfactualComposition` over the
      batch) and recomposed pixels get the downstream class of their new vocabulary id. From
      the bank, a whole bank sample (image and mask) replaces the sample, its mask mapped back
      to downstream ids; only bank samples whose every id maps back are drawn (or every one,
      with ids outside ``classes`` becoming ``unmapped_index``).
    * ``classification``: the label (a class index) stays; classes without a vocabulary
      counterpart are never synthesised, and with ``class_rule='contains'`` each bank image
      stands for one class only (the mapped class with most pixels). Online, the prompt is
      ``prompt_from_ids([vocab id])`` and the condition is a layout of that class, cut out as
      EarthSynth-180K's single-category samples are (the class's pixels, background
      elsewhere), from a bank sample or a ``layouts`` corpus sample that contains it. From
      the bank, a bank sample containing the class (``class_rule='contains'``) or dominated by
      it (``'dominant'``: most non-background pixels). Classes mapping to background are never
      synthesised.
    * ``detection``: online, the boxes (``bbox_xyxy``, ``label``) are rasterised into the
      condition (:func:`rasterize_boxes`); boxes and labels stay. From the bank, a sample
      generated from boxes brings the exact boxes it was generated from (its classes mapped
      back; per-row instance masks, where the batch has them, become the boxes' rectangles);
      bank samples without boxes, or with a class outside ``classes``, are not drawn.

    ``source='online'`` generates with ``synthesizer`` on the batch's device (it moves the
    pipeline there itself, generating under :func:`torch.inference_mode`); ``'bank'`` draws
    from ``bank``; ``'both'`` draws from the bank with probability ``bank_share`` and generates
    otherwise, each falling back to the other when it has nothing suitable. Bank samples are
    pre-loaded into a tensor cache of ``cache_size`` samples on the batch's device (resized to
    the batch; images rounded to uint8), reloaded every ``cache_refresh`` batches (after the
    bank's own ``refresh()``, if it has one, so newly added samples show), so drawing costs
    no disk access. Bank samples were R-Filtered when they were banked; generated ones
    go through ``rfilter`` here, and a sample it drops keeps its real sample.

    The R-Filter is a :class:`~torchgeo_earthsynth.rfilter.SampleFilter` (like
    :class:`~torchgeo_earthsynth.rfilter.RFilter`; what it gets: :func:`.filter_generated`).

    Keys of the batch other than those above are kept; in ``append`` mode each appended row
    copies them from its source row (tensors with a batch dimension, lists of length B), and
    ``prompt``, ``source`` and ``categories`` (when present) describe the synthetic sample.
    :attr:`stats` counts what happened; :attr:`last_plan` says which rows are synthetic. All
    random draws come from a CPU generator seeded with ``seed``: the same batches give the
    same result on any device.

    A generator conditioned on metadata (DiffusionSat) generates each row for its real
    sample's place and date: a batch's ``metadata``, or a TorchGeo ``GeoDataset`` batch's
    bounds and CRS (:attr:`geo`, a :class:`~.synthetic_geo.GeoMetadata`).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        classes: Sequence[str] | None = None,
        task: Task = 'segmentation',
        source: Literal['online', 'bank', 'both'] = 'bank',
        p: float = 0.5,
        mode: Literal['replace', 'append'] = 'replace',
        synthesizer: Synthesizer | SynthesizerLoader | None = None,
        bank: BankLike | None = None,
        layouts: EarthSynth180K | None = None,
        rfilter: SampleFilter | None = None,
        cf_comp: nn.Module | None = None,
        then: Callable[[Batch], Batch] | None = None,
        dataset: str | None = None,
        overrides: dict[str, int | str] | None = None,
        names: str | None = None,
        image_scale: float | None = None,
        unmapped_index: int | None = None,
        ignore_index: int | None = None,
        class_rule: Literal['contains', 'dominant'] = 'contains',
        bank_share: float = 0.5,
        cache_size: int = 256,
        cache_refresh: int | None = None,
        add_to_bank: bool = False,
        seed: int = 0,
    ) -> None:
        """Initialize a new SyntheticAugmentation instance.

        Args:
            classes: the downstream classes in index order (e.g. ``LoveDA.classes``); may be
                left out and set later with :meth:`bind` (downstream datamodules do).
            task: ``segmentation``, ``classification`` or ``detection``.
            source: ``online`` generation, ``bank`` draws, or ``both``.
            p: probability that a sample gets a synthetic counterpart, in [0, 1].
            mode: ``replace`` the sample or ``append`` the synthetic one to the batch.
            synthesizer: a :class:`~torchgeo_earthsynth.synthesis.Synthesizer` (or a
                :class:`SynthesizerLoader`, for configs), for ``online``/``both``.
            bank: a bank of synthetic samples (:class:`BankLike`, e.g. ``SyntheticBank``),
                for ``bank``/``both``; also a source of classification layouts.
            layouts: a corpus (:class:`~torchgeo_earthsynth.datasets.EarthSynth180K` or a
                subclass) to draw classification layouts from.
            rfilter: R-Filter for generated samples (see above).
            cf_comp: batch module recomposing the segmentation conditions counterfactually
                (takes and returns a vocabulary batch: ``image``, ``mask``, ``prompt``,
                ``categories``, ``source``).
            then: applied to the batch afterwards: the datamodule's own augmentation.
            dataset: a dataset of the registry
                (:data:`~torchgeo_earthsynth.encodings.ENCODINGS`, e.g. ``'LoveDA'``):
                its mask values, no-data, vocabulary map, pixel scale and bands are known;
                ``classes`` may then be left out. Left out when attached to a TorchGeo
                datamodule of a registered dataset.
            overrides: extra ``{class name: vocabulary id or name}`` entries.
            names: for a dataset outside the registry whose values are positions in
                ``classes``: a registered dataset whose class names to reuse.
            image_scale: synthetic 0..255 RGB times this is in the dataset's pixel scale
                (default: the registry's, 1 for 8-bit datasets; required where none is
                known, e.g. EuroSAT reflectance). For a multispectral generator: its
                physical values times this are the dataset's pixels (default: the
                registry's ``pixels_per_unit``; required where the generator's units are
                not the dataset's, e.g. a reflectance generator on Potsdam's 8-bit pixels).
            unmapped_index: downstream index that vocabulary ids outside ``classes`` map to
                in bank masks (as the downstream dataset does, e.g. background); None draws
                only bank samples whose every id maps back.
            ignore_index: the downstream dataset's ignore (nodata) mask value; pixels that
                ``cf_comp`` moves onto a vocabulary id without a class (e.g. background moved
                by tiling) get it, else the background class.
            class_rule: which bank samples can stand for a classification label.
            bank_share: with ``source='both'``, the probability of drawing from the bank.
            cache_size: bank (and layout) samples kept in the cache.
            cache_refresh: reload the cache every this many batches; None never.
            add_to_bank: add generated samples that pass the R-Filter to ``bank``.
            seed: seed of the random draws.

        Raises:
            ValueError: if an argument is out of range, a needed source is missing, or a
                class has no vocabulary mapping.
        """
        super().__init__()
        check_options(
            {'p': p, 'bank_share': bank_share},
            {'task': task, 'source': source, 'mode': mode, 'class_rule': class_rule},
            cache_size,
            cache_refresh,
        )
        check_sources(task, source, synthesizer, bank, layouts, add_to_bank)
        self.task: Task = task
        self.source = source
        self.p = p
        self.mode = mode
        self.synthesizer = synthesizer
        self.bank = bank
        self.layouts = layouts
        self.rfilter = rfilter
        self.cf_comp = cf_comp
        self.then = then
        self.unmapped_index = unmapped_index
        self.ignore_index = ignore_index
        self.class_rule = class_rule
        self.bank_share = bank_share
        self.cache_size = cache_size
        self.cache_refresh = cache_refresh
        self.add_to_bank = add_to_bank
        self.seed = seed
        # where generated rows are, for a generator conditioned on metadata
        self.geo = GeoMetadata()
        self.generator = torch.Generator().manual_seed(seed)
        self._seeded_rank = 0
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.last_plan: SyntheticPlan | None = None
        self.classes: tuple[str, ...] | None = None
        self._batches = 0
        self.pools = SamplePools(
            bank, layouts, task, source, cache_size, class_rule, self.generator
        )
        self.image_scale = image_scale
        self.encoding: DatasetEncoding | None = None
        # the generator's bands -> the dataset's (None: RGB 0..255), fitted at attach or
        # on the first batch
        self.band_map: BandMap | None = None
        self._bands_fitted = False
        self._dataset, self._overrides, self._names = dataset, overrides, names
        if classes is not None or dataset is not None:
            self.bind(classes, dataset, overrides, names)

    def bind(
        self,
        classes: Sequence[str] | None = None,
        dataset: str | DatasetEncoding | None = None,
        overrides: Mapping[str, int | str] | None = None,
        names: str | None = None,
    ) -> None:
        """Set the downstream classes and how their values meet the vocabulary.

        Args:
            classes: the classes (a registered dataset's own, or in mask-value order).
            dataset: a registered dataset or an encoding (default: the one given at
                construction).
            overrides: extra mappings (default: those given at construction).
            names: registered class names for positional classes (default: as constructed).

        Raises:
            ValueError: if classes have no vocabulary mapping (all named), the classes or
                dataset differ from those already bound, ``unmapped_index`` is not a class
                value, or recomposed pixels could get no label (``cf_comp``, no background
                class, no ``ignore_index``).
        """
        dataset = dataset if dataset is not None else self._dataset
        overrides = overrides if overrides is not None else self._overrides
        names = names if names is not None else self._names
        encoding = resolve_encoding(classes, dataset, names, overrides, self.task)
        if self.encoding is not None:
            if encoding.classes != self.encoding.classes or encoding.name != self.encoding.name:
                raise ValueError(
                    f'SyntheticAugmentation is bound to classes {self.classes} '
                    f'({self.encoding.name}), not {encoding.classes} ({encoding.name})'
                )
            return
        tables = LabelTables(encoding, self.unmapped_index, self.ignore_index)
        if (
            self.cf_comp is not None
            and self.task == 'segmentation'
            and tables.recomposed_fill is None
        ):
            raise ValueError(
                f'none of the classes {encoding.classes} is background, so pixels that cf_comp '
                "moves onto background would have no label: pass ignore_index=<the dataset's "
                'ignore value> (or unmapped_index)'
            )
        self.encoding = encoding
        self.classes = encoding.classes
        self.tables = tables
        self.lut = tables.lut
        self.inverse = tables.inverse
        self.pools.forget_candidates()

    def fit_to(self, datamodule: Any) -> None:
        """Bind to a TorchGeo datamodule's dataset and check its bands and pixel scale.

        A datamodule of a registered dataset (its ``dataset_class``) binds this augmentation
        to that dataset when nothing is bound yet. Called by :func:`attach`.

        Args:
            datamodule: the datamodule.

        Raises:
            ValueError: if the datamodule's dataset is another than the one bound, its images
                are not RGB (saying how to select RGB bands) for RGB samples, a multispectral
                generator lacks bands it loads (naming them), or their scale or units do not
                match.
        """
        self.geo.fit_to(datamodule)
        name = registered_dataset(datamodule, self.encoding)
        if name is not None and self.encoding is None:
            self.bind(dataset=name)
        if self.encoding is not None:
            self.fit_bands(datamodule)

    def reset_stats(self) -> None:
        """Set every counter of :attr:`stats` to 0."""
        self.stats = dict.fromkeys(STAT_KEYS, 0)

    def extra_repr(self) -> str:
        """The main options, for ``print(module)``."""
        return (
            f'task={self.task!r}, source={self.source!r}, p={self.p}, mode={self.mode!r}, '
            f'classes={self.classes}, seed={self.seed}'
        )

    def forward(self, batch: Batch) -> Batch:
        """Augment a raw training batch, then apply ``then``.

        Args:
            batch: a collated batch on its device, raw images: ``image`` [B, 3, H, W] (or
                [B, C, H, W], the bands :attr:`band_map` maps to) and ``mask`` int
                [B, H, W] (segmentation), ``label`` int [B] (classification), or
                ``bbox_xyxy`` and ``label`` lists (detection).

        Returns:
            The augmented batch (after ``then``).

        Raises:
            ValueError: if the batch lacks a key of the task or holds ids outside ``classes``.
        """
        out, _ = self.augment(batch)
        return self.then(out) if self.then is not None else out


__all__ = (
    'BANK',
    'GENERATED',
    'REAL',
    'STAT_KEYS',
    'BankLike',
    'FilterLike',
    'SynthesizerLoader',
    'SyntheticAugmentation',
    'SyntheticPlan',
    'rasterize_boxes',
)
