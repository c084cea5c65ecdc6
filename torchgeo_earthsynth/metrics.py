# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Evaluation metrics: CLIP score, FID, mask fidelity (mIoU), PSNR/SSIM, a pixel classifier."""

from __future__ import annotations

import math
import os
import socket
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol
from urllib.parse import urlparse

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from .vocabulary import NUM_CLASSES, VOCABULARY

if TYPE_CHECKING:  # open_clip and torch-fidelity are slow to import: loaded when used
    import open_clip

# ---------------------------------------------------------------------------------------------
# CLIP score
# ---------------------------------------------------------------------------------------------

#: Config of :func:`tiny_open_clip`: a 1.6M-parameter open_clip ``CLIP`` for tests and demos.
#: Pass it as ``**TINY_CLIP_CONFIG`` to :meth:`ClipScorer.from_pretrained` to load a checkpoint
#: of such a model.
TINY_CLIP_CONFIG: Final[dict[str, Any]] = {
    'embed_dim': 32,
    'vision_cfg': {'layers': 1, 'width': 32, 'patch_size': 8, 'image_size': 32, 'head_width': 16},
    'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 32, 'heads': 2, 'layers': 1},
}

#: open_clip's initial ``logit_scale`` (log(1/0.07)); a trained model never keeps it exactly.
_INIT_LOGIT_SCALE: Final = float(np.log(1 / 0.07))
#: The tokenizer shipped with open_clip (its BPE file is bundled, so it works offline).
_DEFAULT_TOKENIZER: Final = 'ViT-B-32'

#: A tokenizer in open_clip's style: prompts -> int token ids [N, context_length].
Tokenizer = Callable[[list[str]], Tensor]


class ClipModel(Protocol):
    """What :class:`ClipScorer` needs from a model: an ``nn.Module`` with open_clip's encoders."""

    def encode_image(self, image: Tensor) -> Tensor:
        """Image features [B, D] from normalised images [B, 3, S, S]."""

    def encode_text(self, text: Tensor) -> Tensor:
        """Text features [B, D] from token ids [B, L]."""

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The model's parameters (their device and dtype are used)."""

    def to(self, device: str | torch.device) -> Any:
        """Move the model."""

    def eval(self) -> Any:
        """Switch to evaluation mode."""


class TinyClip(NamedTuple):
    """A tiny random open_clip model, its tokenizer and its input size."""

    model: open_clip.model.CLIP
    tokenizer: Tokenizer
    image_size: int


def tiny_open_clip(seed: int = 0) -> TinyClip:
    """Build a tiny random open_clip ``CLIP`` (offline, about 0.1 s) for tests and demos.

    The architecture is :data:`TINY_CLIP_CONFIG` (32-px images, 8-px patches, one-layer towers,
    32-d embeddings); the tokenizer is open_clip's bundled BPE tokenizer (context length 77).
    The global random state is left untouched.

    Args:
        seed: seed of the weight initialisation.

    Returns:
        ``(model, tokenizer, image_size)`` as a :class:`TinyClip`; the model is in eval mode and
        carries open_clip's default preprocessing config (OpenAI mean/std, size 32).

    .. versionadded:: 0.1
    """
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(
            embed_dim=TINY_CLIP_CONFIG['embed_dim'],
            vision_cfg=open_clip.model.CLIPVisionCfg(**TINY_CLIP_CONFIG['vision_cfg']),
            text_cfg=open_clip.model.CLIPTextCfg(**TINY_CLIP_CONFIG['text_cfg']),
        )
    size = int(TINY_CLIP_CONFIG['vision_cfg']['image_size'])
    open_clip.set_model_preprocess_cfg(
        model,
        {
            'size': size,
            'mean': open_clip.OPENAI_DATASET_MEAN,
            'std': open_clip.OPENAI_DATASET_STD,
        },
    )
    return TinyClip(model.eval(), open_clip.get_tokenizer(_DEFAULT_TOKENIZER), size)


def _hub_offline() -> bool:
    """Whether Hugging Face Hub access is switched off by the environment."""
    import huggingface_hub

    flag = os.environ.get('HF_HUB_OFFLINE', '').upper() in {'1', 'ON', 'YES', 'TRUE'}
    return flag or bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of retrying."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_open_clip_weights(cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """Path of a pretrained tag's weights in the local cache, or ``None``."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

    if 'file' in cfg:
        return str(cfg['file'])
    if cfg.get('hf_hub'):
        # 'org/repo/' means the default file name; open_clip prefers a safetensors twin
        repo_id, filename = os.path.split(cfg['hf_hub'])
        filename = filename or HF_WEIGHTS_NAME
        names = [*_get_safe_alternatives(filename), filename]
        for name in names:
            found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    if cfg.get('url'):
        folder = Path(cache_dir) if cache_dir else Path('~/.cache/clip').expanduser()
        path = folder / os.path.basename(cfg['url'])
        if path.is_file():
            return str(path)
    return None


def _download_host(cfg: dict[str, Any]) -> str:
    return 'huggingface.co' if cfg.get('hf_hub') else (urlparse(cfg.get('url', '')).hostname or '')


def _resize_and_crop(
    x: Tensor,
    size: tuple[int, int],
    interpolation: Literal['bicubic', 'bilinear', 'nearest'],
    resize_mode: Literal['shortest', 'longest', 'squash'],
    fill: float,
) -> Tensor:
    """Batched open_clip resize: ``shortest`` + centre crop, ``longest`` + pad, or ``squash``."""
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    kwargs: dict[str, Any] = {'mode': interpolation}
    if interpolation != 'nearest':
        kwargs.update(align_corners=False, antialias=True)
    match resize_mode:
        case 'squash':
            return F.interpolate(x, size=size, **kwargs)
        case 'shortest':
            scale = max(th / h, tw / w)
        case 'longest':
            scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), **kwargs)
    if resize_mode == 'shortest':
        top, left = (nh - th) // 2, (nw - tw) // 2
        return x[..., top : top + th, left : left + tw]
    top, left = (th - nh) // 2, (tw - nw) // 2
    return F.pad(x, (left, tw - nw - left, top, th - nh - top), value=fill)


class ClipScorer:
    """Batched CLIP score of images against prompts with any open_clip model.

    The score is ``max(100 * cos(image_features, text_features), 0)``, as torchmetrics'
    ``CLIPScore`` defines it (which cannot be used under transformers 5). Images are float
    ``[B, 3, H, W]`` in 0..255; they are resized (``shortest`` side + centre crop by default,
    the model's own mode) and normalised with the model's own mean/std on the model's device,
    batched with torch. Text features are cached per prompt (EarthSynth prompts repeat).

    Build it from

    * an open_clip name and pretrained tag: ``ClipScorer.from_pretrained('ViT-B-32', 'openai')``
      (weights come from the local cache, or are downloaded when the Hub is reachable; offline
      and uncached, a ``RuntimeError`` says so at once);
    * a local checkpoint: ``ClipScorer.from_pretrained('ViT-B-32', '/path/model.safetensors')``;
    * an already-built model: ``ClipScorer(model, open_clip.get_tokenizer('ViT-B-32'))``;
    * a tiny random model for tests: ``ClipScorer.tiny()``.

    A model with random weights gives meaningless scores, so a ``UserWarning`` is emitted.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        model: ClipModel,
        tokenizer: Tokenizer,
        *,
        pretrained: bool | None = None,
        image_size: int | tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: Literal['bicubic', 'bilinear', 'nearest'] | None = None,
        resize_mode: Literal['shortest', 'longest', 'squash'] | None = None,
        batch_size: int = 64,
    ) -> None:
        """Initialize a new ClipScorer from a built model.

        Preprocessing options default to the model's open_clip preprocessing config
        (``open_clip.get_model_preprocess_cfg``), then to open_clip's defaults.

        Args:
            model: an open_clip model (anything with ``encode_image`` and ``encode_text``).
            tokenizer: maps a list of prompts to token ids ``[N, L]`` (e.g.
                ``open_clip.get_tokenizer(model_name)``).
            pretrained: whether the model holds trained weights. ``None`` infers it: a model
                whose ``logit_scale`` still equals open_clip's initial value is random.
            image_size: model input size.
            mean: per-channel normalisation mean (images in [0, 1]).
            std: per-channel normalisation std.
            interpolation: resize interpolation.
            resize_mode: ``shortest`` (resize the short side, centre crop), ``longest``
                (resize the long side, pad) or ``squash``.
            batch_size: images/prompts per forward pass.

        Raises:
            ValueError: if no image size can be found or ``batch_size`` < 1.
        """
        import open_clip

        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        try:
            cfg = dict(open_clip.get_model_preprocess_cfg(model))
        except AttributeError:  # not an open_clip model: no image_size attribute
            cfg = {}
        size = image_size if image_size is not None else cfg.get('size')
        if size is None:
            raise ValueError('image_size is required: the model has no open_clip preprocess cfg')
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = (int(size), int(size)) if isinstance(size, int) else (size[0], size[1])
        self.mean = tuple(
            mean if mean is not None else cfg.get('mean', open_clip.OPENAI_DATASET_MEAN)
        )
        self.std = tuple(std if std is not None else cfg.get('std', open_clip.OPENAI_DATASET_STD))
        self.interpolation = interpolation or cfg.get('interpolation', 'bicubic')
        self.resize_mode = resize_mode or cfg.get('resize_mode', 'shortest')
        self.fill = float(cfg.get('fill_color', 0)) / 255
        self.batch_size = batch_size
        self._text_cache: dict[str, Tensor] = {}
        model.eval()
        if pretrained is None:
            scale = getattr(model, 'logit_scale', None)
            pretrained = not (
                isinstance(scale, Tensor)
                and torch.allclose(scale.detach().float().cpu(), torch.tensor(_INIT_LOGIT_SCALE))
            )
        self.pretrained = pretrained
        if not pretrained:
            warnings.warn(
                'ClipScorer: the CLIP model has random weights (no pretrained checkpoint); '
                'its scores are meaningless except for tests',
                UserWarning,
                stacklevel=2,
            )

    @classmethod
    def from_pretrained(
        cls,
        model_name: str = 'ViT-B-32',
        pretrained: str | Path | None = 'openai',
        *,
        cache_dir: str | Path | None = None,
        device: str | torch.device = 'cpu',
        precision: str = 'fp32',
        batch_size: int = 64,
        **model_kwargs: Any,
    ) -> ClipScorer:
        """Build a scorer from an open_clip model name and a pretrained tag or checkpoint file.

        Nothing hangs offline: a tag's weights are looked up in the local cache first; when
        they are missing and the Hub is switched off (``HF_HUB_OFFLINE``) or unreachable, a
        ``RuntimeError`` is raised at once.

        Args:
            model_name: an open_clip model name (``open_clip.list_models()``) or an
                ``hf-hub:``/``local-dir:`` identifier.
            pretrained: a tag (``open_clip.list_pretrained_tags_by_model(model_name)``), a local
                checkpoint path, or ``None`` for random weights (warns).
            cache_dir: download/cache folder for tagged weights.
            device: device of the model.
            precision: open_clip precision (``fp32``, ``fp16``, ``bf16``...).
            batch_size: images/prompts per forward pass.
            **model_kwargs: overrides of the model config (e.g. ``**TINY_CLIP_CONFIG``).

        Returns:
            The scorer.

        Raises:
            FileNotFoundError: if ``pretrained`` looks like a path that does not exist.
            ValueError: if ``pretrained`` is neither a file nor a known tag of ``model_name``.
            RuntimeError: if the weights are not cached and cannot be downloaded.
        """
        import open_clip

        cache = str(cache_dir) if cache_dir is not None else None
        kwargs: dict[str, Any] = {
            'device': device,
            'precision': precision,
            'cache_dir': cache,
            **model_kwargs,
        }
        weights: str | None = None
        tag = str(pretrained) if pretrained is not None else None
        schema = model_name.split(':', 1)[0] if ':' in model_name else None
        if tag is None:
            kwargs['pretrained_text'] = False  # no silent download of an HF text tower
        elif os.path.isfile(tag):
            weights = tag
        elif schema is None:
            if os.sep in tag or Path(tag).suffix in {'.pt', '.pth', '.bin', '.safetensors'}:
                raise FileNotFoundError(f'CLIP checkpoint {tag!r} does not exist')
            cfg = open_clip.get_pretrained_cfg(model_name, tag)
            if not cfg:
                tags = open_clip.list_pretrained_tags_by_model(model_name)
                raise ValueError(
                    f'{tag!r} is neither a file nor a pretrained tag of open_clip model '
                    f'{model_name!r}; known tags: {tags}'
                )
            weights = _cached_open_clip_weights(cfg, cache)
            if weights is None:
                host = _download_host(cfg)
                if _hub_offline() or not _reachable(host):
                    raise RuntimeError(
                        f'CLIP weights {model_name}/{tag} are not in the local cache and '
                        f'{host} cannot be reached (HF_HUB_OFFLINE or no internet); download '
                        'them on a connected machine, or pass pretrained=<local checkpoint>'
                    )
                weights = open_clip.download_pretrained(cfg, cache_dir=cache)
            kwargs['force_quick_gelu'] = bool(cfg.get('quick_gelu', False))
            kwargs['force_preprocess_cfg'] = {
                k: cfg[k] for k in ('mean', 'std', 'interpolation', 'resize_mode') if k in cfg
            }
        elif schema == 'hf-hub' and not _hub_offline() and not _reachable('huggingface.co'):
            # (offline, huggingface_hub answers from its cache or fails at once)
            raise RuntimeError(f'{model_name} needs huggingface.co, which cannot be reached')
        try:
            model = open_clip.create_model(
                model_name, pretrained=weights if schema is None else tag, **kwargs
            )
        except RuntimeError as error:
            raise RuntimeError(
                f'could not build open_clip model {model_name!r}: {error}'
            ) from error
        tokenizer = open_clip.get_tokenizer(model_name)
        # a checkpoint we loaded is trained; otherwise infer (random weights warn)
        pretrained_flag = True if weights is not None else None
        return cls(model, tokenizer, pretrained=pretrained_flag, batch_size=batch_size)

    @classmethod
    def tiny(cls, seed: int = 0, batch_size: int = 64) -> ClipScorer:
        """A scorer over :func:`tiny_open_clip` (random weights: warns)."""
        model, tokenizer, _ = tiny_open_clip(seed)
        return cls(model, tokenizer, pretrained=False, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(iter(self.model.parameters())).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's parameters."""
        return next(iter(self.model.parameters())).dtype

    def to(self, device: str | torch.device) -> ClipScorer:
        """Move the model to ``device`` (clears the text cache); returns ``self``."""
        self.model.to(device)
        self.clear_cache()
        return self

    @property
    def num_cached_prompts(self) -> int:
        """How many prompts' text features are cached."""
        return len(self._text_cache)

    def clear_cache(self) -> None:
        """Forget every cached text feature."""
        self._text_cache.clear()

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize and normalise float 0..255 images ``[B, 3, H, W]`` for the model.

        Args:
            images: float images in 0..255.

        Returns:
            ``[B, 3, *image_size]`` on the model's device and dtype.

        Raises:
            ValueError: if ``images`` is not ``[B, 3, H, W]``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'images must be [B, 3, H, W], got shape {tuple(images.shape)}')
        x = images.to(self.device, torch.float32) / 255
        x = _resize_and_crop(x, self.image_size, self.interpolation, self.resize_mode, self.fill)
        x = x.clamp(0, 1)  # bicubic overshoots
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    @torch.inference_mode()
    def encode_images(self, images: Tensor) -> Tensor:
        """L2-normalised float32 image features ``[B, D]`` of float 0..255 images."""
        chunks = [
            self.model.encode_image(self.preprocess(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    @torch.inference_mode()
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """L2-normalised float32 text features ``[N, D]``, cached per prompt."""
        todo = sorted({p for p in prompts if p not in self._text_cache})
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            tokens = self.tokenizer(chunk).to(self.device)
            features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(chunk, features))
        if not prompts:
            return torch.empty(0, 0, device=self.device)
        return torch.stack([self._text_cache[p] for p in prompts])

    @staticmethod
    def score_features(image_features: Tensor, text_features: Tensor) -> Tensor:
        """``max(100 * cos(image, text), 0)`` row by row (features need not be normalised).

        Args:
            image_features: ``[B, D]``.
            text_features: ``[B, D]``.

        Returns:
            ``[B]`` scores in [0, 100].
        """
        cos = F.cosine_similarity(image_features.float(), text_features.float(), dim=-1)
        return (100 * cos).clamp(min=0)

    def score(self, images: Tensor, prompts: str | Sequence[str]) -> Tensor:
        """CLIP score of each image against its prompt.

        Args:
            images: float ``[B, 3, H, W]`` in 0..255.
            prompts: one prompt per image, or one prompt for all.

        Returns:
            float32 ``[B]`` scores in [0, 100] on the model's device.

        Raises:
            ValueError: if the numbers of images and prompts differ.
        """
        if isinstance(prompts, str):
            prompts = [prompts] * len(images)
        if len(prompts) != len(images):
            raise ValueError(f'got {len(images)} images but {len(prompts)} prompts')
        return self.score_features(self.encode_images(images), self.encode_prompts(prompts))

    __call__ = score


# ---------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate torch-fidelity's InceptionV3 weights without downloading anything.

    Args:
        path: an explicit weights file; ``None`` looks in the torch hub cache
            (``torch.hub.get_dir()/checkpoints``), where torch-fidelity downloads it.

    Returns:
        The weights file.

    Raises:
        FileNotFoundError: if the file is missing, saying where to get it.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f'Inception weights file {str(path)!r} does not exist')
        return Path(path)
    cached = Path(str(torch.hub.get_dir()), 'checkpoints', str(URL_INCEPTION_V3).rsplit('/', 1)[-1])
    if cached.is_file():
        return cached
    raise FileNotFoundError(
        'FID needs the InceptionV3 weights of torch-fidelity and no download is attempted: '
        f'fetch {URL_INCEPTION_V3} on a connected machine and pass its path as '
        f'weights_path, or put it at {cached}; or pass a custom feature=nn.Module'
    )


class FrechetDistance:
    """FID between real and generated images (torchmetrics ``FrechetInceptionDistance``).

    Images are float ``[B, 3, H, W]`` in 0..255, as everywhere in this package. With the
    default InceptionV3 features they are rounded to uint8 (what torchmetrics expects); a
    custom ``feature`` module receives them unchanged and should expose ``num_features``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        feature: Literal[64, 192, 768, 2048] | nn.Module = 2048,
        weights_path: str | Path | None = None,
        device: str | torch.device = 'cpu',
    ) -> None:
        """Initialize a new FrechetDistance.

        Args:
            feature: InceptionV3 feature layer size, or a module mapping images
                ``[B, 3, H, W]`` (0..255) to features ``[B, F]``.
            weights_path: local InceptionV3 weights (see :func:`find_inception_weights`);
                unused with a custom ``feature`` module.
            device: device of the metric.

        Raises:
            FileNotFoundError: if Inception weights are needed and not found (checked before
                anything is built, so nothing tries to download).
        """
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.custom = isinstance(feature, nn.Module)
        path = None if self.custom else str(find_inception_weights(weights_path))
        self.metric = FrechetInceptionDistance(
            feature=feature, feature_extractor_weights_path=path, reset_real_features=False
        ).to(device)

    def update(self, images: Tensor, real: bool) -> None:
        """Add a batch of float 0..255 images ``[B, 3, H, W]`` to the real or generated set.

        Raises:
            ValueError: if ``images`` is not ``[B, 3, H, W]``.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'images must be [B, 3, H, W], got shape {tuple(images.shape)}')
        images = images.to(self.metric.device)
        if not self.custom:
            images = images.clamp(0, 255).round().to(torch.uint8)
        self.metric.update(images, real=real)

    def compute(self) -> float:
        """The FID between everything added so far (needs >= 2 images per set)."""
        return float(self.metric.compute())

    def reset(self, real: bool = False) -> None:
        """Forget the generated set (and the real set too when ``real``)."""
        self.metric.reset_real_features = real
        self.metric.reset()
        self.metric.reset_real_features = False


def fid(
    real: Tensor | Iterable[Tensor],
    fake: Tensor | Iterable[Tensor],
    feature: Literal[64, 192, 768, 2048] | nn.Module = 2048,
    weights_path: str | Path | None = None,
    device: str | torch.device = 'cpu',
    batch_size: int = 64,
) -> float:
    """FID between two image sets (tensors ``[N, 3, H, W]`` or iterables of batches, 0..255).

    Args:
        real: real images.
        fake: generated images.
        feature: see :class:`FrechetDistance`.
        weights_path: see :class:`FrechetDistance`.
        device: device to compute on.
        batch_size: batch size when a set is given as one tensor.

    Returns:
        The Fréchet distance.
    """
    metric = FrechetDistance(feature, weights_path, device)
    for images, is_real in ((real, True), (fake, False)):
        batches = torch.split(images, batch_size) if isinstance(images, Tensor) else images
        for batch in batches:
            metric.update(batch, real=is_real)
    return metric.compute()


# ---------------------------------------------------------------------------------------------
# Mask fidelity
# ---------------------------------------------------------------------------------------------

Segmenter = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class MaskFidelityResult:
    """How well a segmenter recovers the condition masks from generated images.

    Attributes:
        miou: mean IoU over the classes present in the condition masks.
        per_class: IoU per present class, by vocabulary name (ascending id).
        pixel_accuracy: share of scored pixels labelled correctly.
        num_pixels: pixels scored.
        ignored_pixels: pixels left out (``ignore_index``, or classes the segmenter cannot
            predict).
    """

    miou: float
    per_class: dict[str, float]
    pixel_accuracy: float
    num_pixels: int
    ignored_pixels: int


class MaskFidelity:
    """Mask fidelity: (m)IoU of a segmenter's prediction on generated images vs their masks.

    The segmenter is any callable mapping float 0..255 images ``[B, 3, H, W]`` to logits
    ``[B, C, h, w]`` (resized bilinearly to the mask) or labels ``[B, H, W]``: a
    :class:`PixelClassifier`, or a wrapped TorchGeo ``SemanticSegmentationTask`` (normalise as
    its datamodule does). ``label_map[c]`` gives the vocabulary id of segmenter class ``c``
    (e.g. :func:`torchgeo_earthsynth.vocabulary.label_map`); without it segmenter class ``c``
    is vocabulary id ``c``.

    IoU per class comes from torchmetrics ``MulticlassJaccardIndex(average=None)``. The mean
    runs over classes present in the condition masks: a class the segmenter predicts where
    the mask has none is still penalised, through the IoU of the class the mask does have.
    Mask pixels of classes the segmenter cannot output are not scored when
    ``ignore_unpredictable`` (a LoveDA segmenter cannot see vehicles).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        segmenter: Segmenter,
        label_map: Tensor | Sequence[int] | None = None,
        num_classes: int = NUM_CLASSES,
        class_names: Sequence[str] = VOCABULARY,
        ignore_index: int | None = None,
        ignore_unpredictable: bool = True,
    ) -> None:
        """Initialize a new MaskFidelity.

        Args:
            segmenter: images -> logits (or labels), see above.
            label_map: segmenter class -> vocabulary id lookup table.
            num_classes: number of mask classes (the vocabulary's by default).
            class_names: names of the mask classes.
            ignore_index: a mask class not scored (e.g. 0 for background).
            ignore_unpredictable: leave out mask pixels of classes outside ``label_map``.

        Raises:
            ValueError: if ``label_map`` or ``class_names`` do not fit ``num_classes``.
        """
        self.segmenter = segmenter
        self.lut = None if label_map is None else torch.as_tensor(label_map, dtype=torch.long)
        if self.lut is not None and (self.lut.min() < 0 or self.lut.max() >= num_classes):
            raise ValueError(f'label_map values must lie in [0, {num_classes - 1}]')
        if len(class_names) != num_classes:
            raise ValueError(f'{len(class_names)} class_names for {num_classes} classes')
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.ignore_index = ignore_index
        self.ignore_unpredictable = ignore_unpredictable and self.lut is not None
        self.jaccard = MulticlassJaccardIndex(num_classes, average=None, ignore_index=-1)
        self.ignored = 0

    @torch.inference_mode()
    def predict(self, images: Tensor, size: tuple[int, int]) -> Tensor:
        """Vocabulary-id predictions ``[B, *size]`` of the segmenter."""
        out = self.segmenter(images)
        if out.ndim == 4:
            if out.shape[-2:] != size:
                out = F.interpolate(out.float(), size=size, mode='bilinear', align_corners=False)
            out = out.argmax(1)
        elif out.ndim != 3 or out.is_floating_point():
            raise ValueError(
                'segmenter must return logits [B, C, H, W] or integer labels [B, H, W], got '
                f'{out.dtype} {tuple(out.shape)}'
            )
        elif out.shape[-2:] != size:
            out = F.interpolate(out[:, None].float(), size=size, mode='nearest')[:, 0].long()
        return out.long() if self.lut is None else self.lut.to(out.device)[out.long()]

    def update(self, images: Tensor, masks: Tensor) -> None:
        """Score a batch of generated images against their condition masks.

        Args:
            images: float ``[B, 3, H, W]`` in 0..255.
            masks: int ``[B, H, W]`` class ids.

        Raises:
            ValueError: on mismatched shapes or ids outside ``[0, num_classes)``.
        """
        if images.ndim != 4 or masks.ndim != 3 or len(images) != len(masks):
            raise ValueError(
                f'images must be [B, 3, H, W] and masks [B, H, W]; got {tuple(images.shape)} '
                f'and {tuple(masks.shape)}'
            )
        if masks.numel() and (masks.min() < 0 or masks.max() >= self.num_classes):
            raise ValueError(f'mask ids must lie in [0, {self.num_classes - 1}]')
        pred = self.predict(images, tuple(masks.shape[-2:]))  # type: ignore[arg-type]
        target = masks.to(pred.device).long().clone()
        ignore = torch.zeros_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            ignore |= target == self.ignore_index
        if self.ignore_unpredictable:
            assert self.lut is not None
            known = torch.zeros(self.num_classes, dtype=torch.bool, device=target.device)
            known[self.lut.to(target.device)] = True
            ignore |= ~known[target]
        target[ignore] = -1
        self.ignored += int(ignore.sum())
        self.jaccard = self.jaccard.to(pred.device)
        self.jaccard.update(pred, target)

    def compute(self) -> MaskFidelityResult:
        """The result over everything scored so far.

        Raises:
            RuntimeError: if no pixel has been scored.
        """
        confmat = self.jaccard.confmat  # rows: target, columns: prediction
        total = int(confmat.sum())
        if total == 0:
            raise RuntimeError('MaskFidelity.compute() called before any scored pixel')
        iou = self.jaccard.compute().cpu()
        present = (confmat.sum(1) > 0).cpu()
        if self.ignore_index is not None:
            present[self.ignore_index] = False
        ids = present.nonzero().flatten().tolist()
        per_class = {self.class_names[i]: float(iou[i]) for i in ids}
        miou = float(iou[present].mean()) if ids else float('nan')
        return MaskFidelityResult(
            miou=miou,
            per_class=per_class,
            pixel_accuracy=float(confmat.diagonal().sum()) / total,
            num_pixels=total,
            ignored_pixels=self.ignored,
        )

    def reset(self) -> None:
        """Forget everything scored."""
        self.jaccard.reset()
        self.ignored = 0


def mask_fidelity(
    segmenter: Segmenter,
    images: Tensor,
    masks: Tensor,
    label_map: Tensor | Sequence[int] | None = None,
    ignore_index: int | None = None,
    batch_size: int = 16,
) -> MaskFidelityResult:
    """Mask fidelity of generated ``images`` against their condition ``masks`` in one call.

    Args:
        segmenter: see :class:`MaskFidelity`.
        images: float ``[N, 3, H, W]`` in 0..255.
        masks: int ``[N, H, W]`` vocabulary ids.
        label_map: segmenter class -> vocabulary id.
        ignore_index: a vocabulary id not scored.
        batch_size: images per segmenter call.

    Returns:
        The :class:`MaskFidelityResult`.
    """
    metric = MaskFidelity(segmenter, label_map=label_map, ignore_index=ignore_index)
    for i in range(0, len(images), batch_size):
        metric.update(images[i : i + batch_size], masks[i : i + batch_size])
    return metric.compute()


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM
# ---------------------------------------------------------------------------------------------

#: BT.601 luma weights for [0, 1] RGB giving Y in [16, 235] on the 0..255 scale (as MATLAB's
#: ``rgb2ycbcr`` and the super-resolution literature, e.g. BasicSR ``test_y_channel``).
_BT601_Y: Final = (65.481, 128.553, 24.966)


def rgb_to_y(images: Tensor, data_range: float = 255.0) -> Tensor:
    """BT.601 luma ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (R, G, B in 0..255).

    Inputs in ``[0, data_range]`` are scaled to 0..255, converted, and scaled back, so the
    output is in the input's range (``[16, 235] * data_range / 255``).

    Args:
        images: ``[B, 3, H, W]`` RGB.
        data_range: the images' maximum value (255 or 1).

    Returns:
        ``[B, 1, H, W]`` luma.

    Raises:
        ValueError: if ``images`` is not ``[B, 3, H, W]``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f'y_channel needs RGB [B, 3, H, W], got shape {tuple(images.shape)}')
    weights = torch.tensor(_BT601_Y, dtype=torch.float64, device=images.device).view(1, 3, 1, 1)
    rgb = images.double() * (255.0 / data_range)
    y = 16.0 + (rgb * weights).sum(1, keepdim=True) / 255.0
    return (y * (data_range / 255.0)).to(
        images.dtype if images.is_floating_point() else torch.float32
    )


def _prepare(
    preds: Tensor, target: Tensor, data_range: float, y_channel: bool, crop_border: int
) -> tuple[Tensor, Tensor]:
    if preds.shape != target.shape or preds.ndim != 4:
        raise ValueError(
            f'preds and target must both be [B, C, H, W], got {tuple(preds.shape)} and '
            f'{tuple(target.shape)}'
        )
    h, w = preds.shape[-2:]
    if not 0 <= 2 * crop_border < min(h, w):
        raise ValueError(f'crop_border={crop_border} leaves nothing of a {h}x{w} image')
    preds, target = preds.double(), target.double()
    if y_channel:
        preds, target = rgb_to_y(preds, data_range), rgb_to_y(target, data_range)
    if crop_border:
        c = crop_border
        preds, target = preds[..., c:-c, c:-c], target[..., c:-c, c:-c]
    return preds, target


def psnr(
    preds: Tensor,
    target: Tensor,
    data_range: float = 255.0,
    y_channel: bool = False,
    crop_border: int = 0,
    reduction: Literal['mean', 'none'] = 'mean',
) -> Tensor:
    """PSNR per image (averaged over the batch), as super-resolution papers report it.

    Computed with torchmetrics' functional ``peak_signal_noise_ratio`` over each image in
    float64; identical images give ``inf``.

    Args:
        preds: ``[B, C, H, W]`` in ``[0, data_range]``.
        target: same shape.
        data_range: maximum value (255 for 0..255 images).
        y_channel: compare BT.601 luma only (:func:`rgb_to_y`).
        crop_border: pixels removed from each side before comparing.
        reduction: ``mean`` over images or ``none`` for ``[B]``.

    Returns:
        PSNR in dB (float64).

    Raises:
        ValueError: on mismatched shapes or a too large ``crop_border``.
    """
    preds, target = _prepare(preds, target, data_range, y_channel, crop_border)
    values = peak_signal_noise_ratio(
        preds, target, data_range=data_range, reduction='none', dim=(1, 2, 3)
    )
    return values.mean() if reduction == 'mean' else values


def ssim(
    preds: Tensor,
    target: Tensor,
    data_range: float = 255.0,
    y_channel: bool = False,
    crop_border: int = 0,
    reduction: Literal['mean', 'none'] = 'mean',
) -> Tensor:
    """SSIM per image (Gaussian 11x11 window, sigma 1.5, torchmetrics' functional SSIM).

    Args:
        preds: ``[B, C, H, W]`` in ``[0, data_range]``; at least 11 px after cropping.
        target: same shape.
        data_range: maximum value (255 for 0..255 images).
        y_channel: compare BT.601 luma only (:func:`rgb_to_y`).
        crop_border: pixels removed from each side before comparing.
        reduction: ``mean`` over images or ``none`` for ``[B]``.

    Returns:
        SSIM in [-1, 1] (float64); 1 for identical images.

    Raises:
        ValueError: on mismatched shapes, a too large ``crop_border`` or images under 11 px.
    """
    preds, target = _prepare(preds, target, data_range, y_channel, crop_border)
    if min(preds.shape[-2:]) < 11:
        raise ValueError(f'SSIM needs images of at least 11x11 px, got {tuple(preds.shape[-2:])}')
    values = structural_similarity_index_measure(
        preds, target, data_range=data_range, reduction='none'
    )
    assert isinstance(values, Tensor)
    return values.mean() if reduction == 'mean' else values


# ---------------------------------------------------------------------------------------------
# A tiny stand-in segmenter
# ---------------------------------------------------------------------------------------------


class PixelClassifier(nn.Module):
    """A tiny per-pixel classifier: local colour statistics -> class, a stand-in segmenter.

    Each pixel is described by the mean and standard deviation of each colour channel in
    box windows of ``kernel_sizes`` (kornia ``box_blur``, reflect borders), standardised,
    then classified by a linear layer (logistic regression) or, with ``hidden > 0``, a
    one-hidden-layer MLP. Classes never seen in :meth:`fit` get a logit of -1e4. Enough to
    tell how well generated images follow their masks on the mini corpus, where each class has
    its own colour and texture.

    .. versionadded:: 0.1
    """

    feature_mean: Tensor
    feature_std: Tensor
    seen: Tensor

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        kernel_sizes: Sequence[int] = (3, 7),
        hidden: int = 32,
    ) -> None:
        """Initialize a new, unfitted PixelClassifier.

        Args:
            num_classes: number of output classes (vocabulary ids).
            kernel_sizes: odd box window sizes of the colour statistics.
            hidden: hidden units of the MLP; 0 for logistic regression.

        Raises:
            ValueError: if a kernel size is not a positive odd number.
        """
        super().__init__()
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f'kernel_sizes must be positive odd numbers, got {kernel_sizes}')
        self.num_classes = num_classes
        self.kernel_sizes = tuple(kernel_sizes)
        num_features = 6 * len(self.kernel_sizes)
        self.body: nn.Module = (
            nn.Identity()
            if hidden == 0
            else nn.Sequential(nn.Linear(num_features, hidden), nn.GELU())
        )
        self.out = nn.Linear(hidden or num_features, num_classes)
        self.register_buffer('feature_mean', torch.zeros(num_features))
        self.register_buffer('feature_std', torch.ones(num_features))
        self.register_buffer('seen', torch.zeros(num_classes, dtype=torch.bool))

    def features(self, images: Tensor) -> Tensor:
        """Unstandardised per-pixel features ``[B, 6 * len(kernel_sizes), H, W]``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'images must be [B, 3, H, W], got shape {tuple(images.shape)}')
        x = images.float() / 255
        out = []
        for k in self.kernel_sizes:
            mean = kornia.filters.box_blur(x, k) if k > 1 else x
            var = (kornia.filters.box_blur(x * x, k) if k > 1 else x * x) - mean * mean
            out += [mean, var.clamp(min=0).sqrt()]
        return torch.cat(out, dim=1)

    def _logits(self, features: Tensor, classes: Tensor | None = None) -> Tensor:
        """Logits ``[N, C]`` of raw features ``[N, F]``; unseen classes get -1e4.

        With ``classes``, only those columns are computed (cheaper while fitting).
        """
        hidden = self.body((features - self.feature_mean) / self.feature_std)
        if classes is not None:
            return F.linear(hidden, self.out.weight[classes], self.out.bias[classes])
        logits: Tensor = self.out(hidden)
        return logits.masked_fill(~self.seen, -1e4)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``[B, num_classes, H, W]`` of float 0..255 images ``[B, 3, H, W]``."""
        feats = self.features(images.to(self.feature_mean.device))
        b, f, h, w = feats.shape
        logits = self._logits(feats.permute(0, 2, 3, 1).reshape(-1, f))
        return logits.view(b, h, w, -1).permute(0, 3, 1, 2)

    @torch.inference_mode()
    def predict(self, images: Tensor) -> Tensor:
        """Class ids ``[B, H, W]`` of float 0..255 images."""
        logits: Tensor = self(images)
        return logits.argmax(1)

    def fit(
        self,
        images: Tensor,
        masks: Tensor,
        steps: int = 300,
        lr: float = 0.05,
        max_pixels: int = 50_000,
        seed: int = 0,
    ) -> PixelClassifier:
        """Fit on real images and their masks (full-batch Adam on sampled pixels).

        Args:
            images: float ``[N, 3, H, W]`` in 0..255.
            masks: int ``[N, H, W]`` class ids.
            steps: optimisation steps.
            lr: Adam learning rate.
            max_pixels: pixels sampled (uniformly) for training.
            seed: seed of the sampling and the initialisation.

        Returns:
            ``self``, in eval mode.

        Raises:
            ValueError: on mismatched shapes or ids outside ``[0, num_classes)``.
        """
        if (
            masks.ndim != 3
            or images.shape[0] != masks.shape[0]
            or images.shape[-2:] != masks.shape[-2:]
        ):
            raise ValueError(
                f'images [N, 3, H, W] and masks [N, H, W] must match, got {tuple(images.shape)} '
                f'and {tuple(masks.shape)}'
            )
        if masks.min() < 0 or masks.max() >= self.num_classes:
            raise ValueError(f'mask ids must lie in [0, {self.num_classes - 1}]')
        device = self.feature_mean.device
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            feats = self.features(images.to(device))
            feats = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
            labels = masks.to(device).reshape(-1).long()
            if len(labels) > max_pixels:
                keep = torch.randperm(len(labels), generator=generator)[:max_pixels].to(device)
                feats, labels = feats[keep], labels[keep]
            self.feature_mean.copy_(feats.mean(0))
            self.feature_std.copy_(feats.std(0).clamp(min=1e-6))
            self.seen.zero_()
            classes = torch.unique(labels)
            self.seen[classes] = True
            targets = torch.searchsorted(classes, labels)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    bound = 1 / math.sqrt(module.in_features)
                    weight = torch.empty(module.weight.shape)  # CPU generator: same on any device
                    module.weight.copy_(weight.uniform_(-bound, bound, generator=generator))
                    module.bias.zero_()
        self.train()
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(self._logits(feats, classes), targets)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        return self.eval()


__all__ = (
    'TINY_CLIP_CONFIG',
    'ClipModel',
    'ClipScorer',
    'FrechetDistance',
    'MaskFidelity',
    'MaskFidelityResult',
    'PixelClassifier',
    'TinyClip',
    'fid',
    'find_inception_weights',
    'mask_fidelity',
    'psnr',
    'rgb_to_y',
    'ssim',
    'tiny_open_clip',
)
