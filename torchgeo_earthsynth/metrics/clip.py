# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""CLIP score: ``ClipScorer`` over any open_clip model, and the tiny offline CLIP."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # open_clip and torch-fidelity are slow to import: loaded when used
    import open_clip


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


__all__ = (
    'TINY_CLIP_CONFIG',
    'ClipModel',
    'ClipScorer',
    'TinyClip',
    'Tokenizer',
    'tiny_open_clip',
)
