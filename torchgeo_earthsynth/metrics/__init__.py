# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Evaluation metrics: CLIP score, FID, mask fidelity, PSNR/SSIM, pixel classifier, season."""

from torchgeo_earthsynth.metrics.clip import (
    TINY_CLIP_CONFIG,
    ClipModel,
    ClipScorer,
    TinyClip,
    Tokenizer,
    tiny_open_clip,
)
from torchgeo_earthsynth.metrics.clip_training import train_clip
from torchgeo_earthsynth.metrics.fid import FrechetDistance, fid, find_inception_weights
from torchgeo_earthsynth.metrics.generator_fidelity import (
    REAL_ROW,
    GeneratorFidelity,
    MaskGenerator,
    generate_images,
    generator_fidelity,
)
from torchgeo_earthsynth.metrics.image_quality import psnr, rgb_to_y, ssim
from torchgeo_earthsynth.metrics.mask_fidelity import (
    MaskFidelity,
    MaskFidelityResult,
    PresentClassIoU,
    Segmenter,
    mask_fidelity,
    miou_from_confusion,
    per_sample_miou,
)
from torchgeo_earthsynth.metrics.pixel_classifier import PixelClassifier
from torchgeo_earthsynth.metrics.season_following import corpus_season_shift, season_shift

__all__ = (
    'REAL_ROW',
    'TINY_CLIP_CONFIG',
    'ClipModel',
    'ClipScorer',
    'FrechetDistance',
    'GeneratorFidelity',
    'MaskFidelity',
    'MaskFidelityResult',
    'MaskGenerator',
    'PixelClassifier',
    'PresentClassIoU',
    'Segmenter',
    'TinyClip',
    'Tokenizer',
    'corpus_season_shift',
    'fid',
    'find_inception_weights',
    'generate_images',
    'generator_fidelity',
    'mask_fidelity',
    'miou_from_confusion',
    'per_sample_miou',
    'psnr',
    'rgb_to_y',
    'season_shift',
    'ssim',
    'tiny_open_clip',
    'train_clip',
)
