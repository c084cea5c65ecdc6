# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""DSCLoRA (Chai et al., CVPRW 2025): SPAN with ConvLoRA adapters, distilled from a teacher.

*Distillation-Supervised Convolutional Low-Rank Adaptation for Efficient Image
Super-Resolution* (arXiv 2504.11271) takes SPAN (Wan et al., CVPRW 2024: a stack of SPAB
blocks, three 3x3 convolutions each, gated by the parameter-free attention
``sigmoid(out) - 0.5``), pre-trains it, adds ConvLoRA adapters (a low-rank update of each
convolution's kernel), freezes the base and trains only the adapters with an L1 loss plus a
spatial-affinity distillation loss against a larger teacher's feature maps. The adapters merge
into the kernels afterwards, so inference costs exactly what SPAN costs.

Here the network takes any band count and, like :class:`~torchgeo_earthsynth.models.ESPCN`,
predicts a residual over the bicubic upsampling of the stack's RGB bands (0..255 in and out).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from torchgeo_earthsynth.models.sr_baseline import fit_pairs

__all__ = (
    'SPAN',
    'ConvLoRA2d',
    'fit_dsclora',
    'fit_span',
    'spatial_affinity',
    'spatial_affinity_loss',
    'train_dsclora',
)


class ConvLoRA2d(nn.Module):
    """A convolution plus a low-rank update of its kernel (ConvLoRA).

    The kernel ``W`` [out, in, k, k] gets ``scaling * (B @ A)`` reshaped to its shape, with
    ``A`` [r * k, in * k] and ``B`` [out * k, r * k] (the factorisation of the DSCLoRA code);
    ``B`` starts at zero so an adapter starts as the identity edit. :meth:`merge` folds the
    update into the kernel (same outputs, no extra cost); :meth:`unmerge` takes it out again.

    Args:
        conv: the convolution to adapt (square kernel, groups 1); kept as ``base``.
        rank: the rank ``r`` (>= 1).
        alpha: the update is scaled by ``alpha / rank``.
    """

    def __init__(self, conv: nn.Conv2d, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        kernel = conv.kernel_size[0]
        if rank < 1 or conv.groups != 1 or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(
                f'ConvLoRA2d: rank >= 1 on a square, ungrouped convolution, got rank={rank}, '
                f'kernel={conv.kernel_size}, groups={conv.groups}'
            )
        self.base = conv
        self.rank = rank
        self.scaling = (2.0 * rank if alpha is None else alpha) / rank
        self.lora_A = nn.Parameter(conv.weight.new_zeros(rank * kernel, conv.in_channels * kernel))
        self.lora_B = nn.Parameter(conv.weight.new_zeros(conv.out_channels * kernel, rank * kernel))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False

    def delta(self) -> Tensor:
        """The kernel update ``scaling * B @ A`` in the kernel's shape."""
        return (self.lora_B @ self.lora_A).view(self.base.weight.shape) * self.scaling

    def merge(self) -> None:
        """Fold the update into the base kernel (idempotent)."""
        if not self.merged:
            with torch.no_grad():
                self.base.weight += self.delta()
            self.merged = True

    def unmerge(self) -> None:
        """Take a merged update out of the base kernel again (idempotent)."""
        if self.merged:
            with torch.no_grad():
                self.base.weight -= self.delta()
            self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        """The adapted convolution of ``x``."""
        if self.merged:
            out: Tensor = self.base(x)
            return out
        conv = self.base
        return F.conv2d(
            x, conv.weight + self.delta(), conv.bias, conv.stride, conv.padding, conv.dilation
        )


class _SPAB(nn.Module):
    """Swift parameter-free attention block: three 3x3 convolutions, SiLU, gated residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.c3 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The block's output and its first convolution's map (SPAN concatenates one)."""
        first = self.c1(x)
        out = self.c3(F.silu(self.c2(F.silu(first))))
        # Parameter-free attention: the block's own output, centred at 0, gates it.
        return (out + x) * (torch.sigmoid(out) - 0.5), first


class SPAN(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers is untyped
    """SPAN (Wan et al., CVPRW 2024) on any band count, optionally with ConvLoRA adapters.

    A 3x3 convolution to ``features`` channels, ``blocks`` SPAB blocks, a 1x1 convolution
    over the concatenation of the shallow features, the last block's output, the first
    block's output and the second-to-last block's first map (as SPAN), a 3x3 convolution and
    a sub-pixel upsampler; the output is a residual over the bicubic upsampling of the
    stack's RGB bands. With ``lora_rank > 0`` every convolution is a :class:`ConvLoRA2d`
    (the DSCLoRA student): the rank of the last two (the reconstruction layers) is doubled,
    as the paper gives the high-frequency layers the largest rank. Saved and loaded with
    diffusers' ``save_pretrained`` / ``from_pretrained`` (safetensors and a config JSON,
    adapters included).

    Args:
        in_channels: bands of the low-res stack.
        scale: upscaling factor.
        features: channels of the feature maps (SPAN: 48, its NTIRE variant 28).
        blocks: SPAB blocks (>= 2; SPAN: 6).
        rgb_bands: the stack's red, green and blue channels (the bicubic residual base).
        lora_rank: ConvLoRA rank of the inner convolutions (0: plain SPAN).

    .. versionadded:: 0.3
    """

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(
        self,
        in_channels: int = 3,
        scale: int = 2,
        features: int = 28,
        blocks: int = 6,
        rgb_bands: Sequence[int] = (0, 1, 2),
        lora_rank: int = 0,
    ) -> None:
        super().__init__()
        if scale < 1 or blocks < 2 or features < 1 or len(rgb_bands) != 3 or lora_rank < 0:
            raise ValueError(
                f'SPAN: scale >= 1, blocks >= 2, features >= 1, three rgb_bands and '
                f'lora_rank >= 0, got scale={scale}, blocks={blocks}, features={features}, '
                f'rgb_bands={list(rgb_bands)}, lora_rank={lora_rank}'
            )
        self.head = nn.Conv2d(in_channels, features, 3, padding=1)
        self.spabs = nn.ModuleList(_SPAB(features) for _ in range(blocks))
        self.fuse = nn.Conv2d(features * 4, features, 1)
        self.tail = nn.Conv2d(features, features, 3, padding=1)
        self.upsample = nn.Conv2d(features, 3 * scale**2, 3, padding=1)
        if lora_rank:
            self.add_lora(lora_rank)

    def add_lora(self, rank: int) -> None:
        """Wrap every convolution in a :class:`ConvLoRA2d` (doubled rank on the last two).

        Only the adapters stay trainable; the base kernels and biases are frozen.
        """
        if any(isinstance(m, ConvLoRA2d) for m in self.modules()):
            raise ValueError('SPAN.add_lora: the network already has adapters')
        reconstruction = {'tail', 'upsample'}
        for name, module in list(self.named_modules()):
            for child, conv in list(module.named_children()):
                if isinstance(conv, nn.Conv2d):
                    top = f'{name}.{child}' if name else child
                    r = 2 * rank if top in reconstruction else rank
                    setattr(module, child, ConvLoRA2d(conv, r))
        for parameter_name, parameter in self.named_parameters():
            parameter.requires_grad_('lora_' in parameter_name)
        self.register_to_config(lora_rank=rank)

    def adapters(self) -> list[ConvLoRA2d]:
        """The network's ConvLoRA adapters (empty for a plain SPAN)."""
        return [m for m in self.modules() if isinstance(m, ConvLoRA2d)]

    def merge_lora(self) -> None:
        """Fold every adapter into its kernel (outputs unchanged, SPAN's inference cost)."""
        for adapter in self.adapters():
            adapter.merge()

    def unmerge_lora(self) -> None:
        """Take every merged adapter out of its kernel again."""
        for adapter in self.adapters():
            adapter.unmerge()

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        """Save as diffusers does, with the adapters unmerged (as they load)."""
        merged = [a for a in self.adapters() if a.merged]
        for adapter in merged:
            adapter.unmerge()
        try:
            super().save_pretrained(*args, **kwargs)
        finally:
            for adapter in merged:
                adapter.merge()

    def forward_features(self, low_res: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The super-resolved RGB and the feature maps distillation compares.

        Args:
            low_res: [B, in_channels, h, w], 0..255.

        Returns:
            RGB [B, 3, h * scale, w * scale] (0..255) and the head's and every block's
            output, each [B, features, h, w].

        Raises:
            ValueError: if the band count is not ``in_channels``.
        """
        channels = self.config.in_channels
        if low_res.ndim != 4 or low_res.shape[1] != channels:
            raise ValueError(
                f'SPAN: expected low_res [B, {channels}, h, w], got {list(low_res.shape)}'
            )
        scale = self.config.scale
        shallow = self.head(low_res / 127.5 - 1)
        maps, firsts = [shallow], []
        x = shallow
        for block in self.spabs:
            x, first = block(x)
            maps.append(x)
            firsts.append(first)
        fused = self.fuse(torch.cat([shallow, x, maps[1], firsts[-2]], dim=1))
        residual = F.pixel_shuffle(self.upsample(self.tail(fused)), scale) * 127.5
        rgb = low_res[:, list(self.config.rgb_bands)]
        size = (low_res.shape[-2] * scale, low_res.shape[-1] * scale)
        base = F.interpolate(rgb, size=size, mode='bicubic', align_corners=False)
        return base + residual, maps

    def forward(self, low_res: Tensor) -> Tensor:
        """Super-resolve [B, in_channels, h, w] (0..255) to RGB [B, 3, h * scale, w * scale]."""
        return self.forward_features(low_res)[0]


def spatial_affinity(feature: Tensor) -> Tensor:
    """The spatial affinity matrix of a feature map: cosine similarity of every pixel pair.

    Independent of the channel count, so a narrow student compares with a wide teacher.

    Args:
        feature: [B, C, h, w].

    Returns:
        [B, h * w, h * w].
    """
    flat = F.normalize(feature.flatten(2), dim=1)
    return flat.transpose(1, 2) @ flat


def spatial_affinity_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Mean L1 distance of the paired maps' spatial affinity matrices (DSCLoRA's SAKD).

    Args:
        student: the student's feature maps.
        teacher: the teacher's, as many, of the same spatial sizes (any channel count).

    Returns:
        A scalar.

    Raises:
        ValueError: if the lists differ in length or are empty.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f'spatial_affinity_loss: as many student as teacher maps (>= 1), got '
            f'{len(student)} and {len(teacher)}'
        )
    losses = [
        F.l1_loss(spatial_affinity(s), spatial_affinity(t.detach()))
        for s, t in zip(student, teacher, strict=True)
    ]
    return torch.stack(losses).mean()


def _paired(student: list[Tensor], teacher: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Pair the head with the head and the last block with the last, spread in between."""
    if len(student) == len(teacher):
        return student, teacher
    picks = torch.linspace(0, len(teacher) - 1, len(student)).round().long().tolist()
    return student, [teacher[i] for i in picks]


def fit_dsclora(
    model: SPAN,
    batches: Iterable[dict[str, Any]],
    steps: int,
    lr: float = 1e-3,
    teacher: SPAN | None = None,
    distill_weight: float = 1.0,
) -> list[float]:
    """Train on (``low_res``, ``image``) pairs: L1, plus affinity distillation if a teacher.

    Only the parameters that require gradients train (the adapters of a DSCLoRA student,
    everything of a plain SPAN). The loss is ``L1 / 255 + distill_weight *``
    :func:`spatial_affinity_loss` of the student's and the frozen teacher's feature maps.

    Args:
        model: the network (trained in place, left in eval mode).
        batches: batches with ``low_res`` [B, C, h, w] and ``image`` [B, 3, H, W], 0..255;
            cycled until ``steps``.
        steps: optimizer steps.
        lr: learning rate (AdamW).
        teacher: the frozen teacher (None: no distillation).
        distill_weight: weight of the distillation term.

    Returns:
        The loss of every step.

    Raises:
        ValueError: if ``batches`` is empty or nothing is trainable.
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError('fit_dsclora: the model has no trainable parameters')
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    if teacher is not None:
        teacher.eval().requires_grad_(False)

    def distilled_l1(batch: dict[str, Any]) -> Tensor:
        low_res = batch['low_res'].to(model.device)
        prediction, maps = model.forward_features(low_res)
        loss = F.l1_loss(prediction, batch['image'].to(model.device)) / 255
        if teacher is not None:
            with torch.no_grad():
                teacher_maps = teacher.forward_features(low_res)[1]
            loss = loss + distill_weight * spatial_affinity_loss(*_paired(maps, teacher_maps))
        return loss

    return fit_pairs(model, batches, steps, optimizer, distilled_l1, 'fit_dsclora')


def fit_span(
    model: SPAN, batches: Iterable[dict[str, Any]], steps: int, lr: float = 1e-3
) -> list[float]:
    """Pre-train a plain SPAN (the teacher, or the student's base) with an L1 loss.

    Args:
        model: the network (trained in place).
        batches: as :func:`fit_dsclora`'s.
        steps: optimizer steps.
        lr: learning rate.

    Returns:
        The loss of every step.
    """
    return fit_dsclora(model, batches, steps, lr)


def train_dsclora(
    batches: Iterable[dict[str, Any]],
    in_channels: int,
    scale: int,
    steps: int,
    lr: float = 1e-3,
    rgb_bands: Sequence[int] = (0, 1, 2),
    teacher_features: int = 48,
    student_features: int = 28,
    blocks: int = 6,
    rank: int = 4,
    distill_weight: float = 1.0,
    device: str | torch.device = 'cpu',
) -> tuple[SPAN, dict[str, list[float]]]:
    """The DSCLoRA recipe: teacher SPAN, student SPAN, then distilled ConvLoRA on the student.

    1. a wide SPAN (the teacher) and 2. a narrow SPAN (the student's base) each train
    ``steps`` steps with L1; 3. the student gets ConvLoRA adapters, its base is frozen, and
    the adapters train ``steps`` steps with L1 plus spatial-affinity distillation from the
    teacher; 4. the adapters are merged.

    Args:
        batches: training batches (``low_res``, ``image``), re-iterable.
        in_channels: bands of the low-res stack.
        scale: upscaling factor.
        steps: optimizer steps of each of the three stages.
        lr: learning rate.
        rgb_bands: the stack's red, green and blue channels.
        teacher_features: the teacher's width.
        student_features: the student's width.
        blocks: SPAB blocks of both.
        rank: the adapters' rank.
        distill_weight: weight of the distillation term.
        device: where the networks train.

    Returns:
        The merged student (eval mode) and each stage's losses
        (``teacher``, ``student``, ``lora``).
    """

    def span(features: int) -> SPAN:
        network: SPAN = SPAN(in_channels, scale, features, blocks, tuple(rgb_bands))
        network.to(device)
        return network

    teacher, student = span(teacher_features), span(student_features)
    losses = {'teacher': fit_span(teacher, batches, steps, lr)}
    losses['student'] = fit_span(student, batches, steps, lr)
    student.add_lora(rank)
    student.to(device)
    losses['lora'] = fit_dsclora(student, batches, steps, lr, teacher, distill_weight)
    student.merge_lora()
    return student, losses
