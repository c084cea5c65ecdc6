# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Which generator family a checkpoint is, and its pipeline (for :class:`.Synthesizer`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

from torchgeo_earthsynth.controls import CONTROLS
from torchgeo_earthsynth.datasets import MULTISPECTRAL_BANDS
from torchgeo_earthsynth.families.pipelines import build_pipeline, build_text_pipeline
from torchgeo_earthsynth.families.superres import is_super_resolution_export, low_res_pipeline
from torchgeo_earthsynth.families.temporal import is_temporal_export, temporal_pipeline
from torchgeo_earthsynth.models import (
    EARTHSYNTH_ID,
    EARTHSYNTH_SUBFOLDER,
    IP_ADAPTER_WEIGHTS,
    MULTICONTROL_CONFIG,
    SD15_ID,
    TEXT2EARTH_DEFAULTS,
    DiffusionSatControlNet,
    LowResControlNetPipeline,
    NamedMultiControlNet,
    TemporalControlNetPipeline,
    diffusionsat_parts,
    find_diffusionsat_controlnet,
    find_diffusionsat_unet,
    find_temporal_controlnet,
    is_multicontrol,
    is_text2earth,
    load_controlnet,
    load_diffusionsat_controlnet,
    load_global_content,
    load_temporal_controlnet,
    pretrained_parts,
    text2earth_parts,
    tiny_controlnet,
    tiny_diffusionsat_controlnet,
    tiny_diffusionsat_parts,
    tiny_multicontrol,
    tiny_multispectral_vae,
    tiny_parts,
    tiny_text2earth_parts,
)
from torchgeo_earthsynth.synthesis.parts import (
    Family,
    _check_exists,
    _raise_if_unreachable,
    check_compatible,
)

#: A pipeline of any family.
Pipeline: TypeAlias = StableDiffusionControlNetPipeline | StableDiffusionPipeline


def _checkpoint_parts(folder: Path, base: str | Path | None, kind: str, hint: str) -> Any:
    """The DiffusionSat checkpoint ``base`` a ControlNet of theirs (``kind``) steers.

    Raises:
        ValueError: without ``base`` (``hint`` says which), or if it holds no DiffusionSat UNet.
    """
    if base is None:
        raise ValueError(
            f'{folder}: a DiffusionSat {kind} ControlNet needs base= the DiffusionSat '
            f'checkpoint folder it was trained on ({hint})'
        )
    _check_exists(base, 'DiffusionSat checkpoint')
    unet_folder = find_diffusionsat_unet(base)
    if unet_folder is None:
        raise ValueError(
            f'{base}: no DiffusionSat UNet (use_metadata/num_metadata) for the {kind} '
            f'ControlNet {folder}'
        )
    return diffusionsat_parts(base, unet_folder)


def _super_resolution_parts(
    folder: Path, base: str | Path | None
) -> tuple[Any, DiffusionSatControlNet, type[LowResControlNetPipeline]]:
    """Their super-resolution ControlNet and the DiffusionSat checkpoint it steers."""
    hint = 'finetune_sd21_sn-satlas-fmow_snr5_md7norm_bs64'
    parts = _checkpoint_parts(folder, base, 'super-resolution', hint)
    controlnet = load_diffusionsat_controlnet(folder)
    check_compatible(controlnet, parts.unet, parts.text_encoder, str(folder), str(base))
    return parts, controlnet, LowResControlNetPipeline


def _temporal_release_parts(
    folder: Path, release: Path, base: str | Path | None
) -> tuple[Any, Any, type[TemporalControlNetPipeline]]:
    """Their temporal ControlNet and the DiffusionSat checkpoint it steers.

    The checkpoint is ``base``, else the release folder itself when it holds their UNet
    (their training saves the whole pipeline beside the ControlNet).
    """
    if base is None and find_diffusionsat_unet(release) is not None:
        base = release
    hint = 'no UNet with use_metadata in the release'
    parts = _checkpoint_parts(folder, base, 'temporal', hint)
    controlnet = load_temporal_controlnet(folder)
    check_compatible(controlnet, parts.unet, parts.text_encoder, str(folder), str(base))
    return parts, controlnet, TemporalControlNetPipeline


def _multicontrol_pipeline(path: Path, base: str | Path | None) -> Pipeline:
    """A saved :class:`NamedMultiControlNet` (in ``path`` or ``path/controlnet``) on its base.

    The base is ``base``, else ``path`` itself when it holds the SD parts (``unet/``), else
    SD 1.5. An ``ip_adapter.safetensors`` beside it (the global content condition) is
    loaded into the UNet with its CLIP vision model (``image_encoder/``, else the
    ``reference_encoder`` its ``earthsynth.json`` names).
    """
    folder = path if (path / MULTICONTROL_CONFIG).exists() else path / EARTHSYNTH_SUBFOLDER
    if base is None:
        base = path if (path / 'unet' / 'config.json').exists() else SD15_ID
    _check_exists(base, 'Stable Diffusion base')
    model = NamedMultiControlNet.from_pretrained(folder)
    try:
        parts = pretrained_parts(base)
    except (OSError, ValueError, KeyError) as error:
        _raise_if_unreachable(base, error)
        raise ValueError(f'{base}: cannot load the Stable Diffusion base ({error})') from error
    for name, net in model.by_name().items():
        check_compatible(net, parts.unet, parts.text_encoder, f'{folder}/{name}', str(base))
    pipeline = build_pipeline(parts, model)
    if (path / IP_ADAPTER_WEIGHTS).exists():
        meta = path / 'earthsynth.json'
        encoder = json.loads(meta.read_text()).get('reference_encoder') if meta.exists() else None
        load_global_content(pipeline, path, *([encoder] if encoder else []))
    return pipeline


def _exported_pipeline(path: Path) -> tuple[Pipeline, dict[str, Any]]:
    """A full ControlNet pipeline export of ours, and the settings its earthsynth.json records."""
    try:
        # part by part: the ControlNet's class may be ours (a mask ControlNet + metadata)
        controlnet_model = load_controlnet(path, EARTHSYNTH_SUBFOLDER)
        pipeline = build_pipeline(pretrained_parts(path), controlnet_model)
    except (OSError, ValueError, KeyError) as error:
        message = f'{path}: cannot load the ControlNet pipeline ({error})'
        raise ValueError(message) from error
    check_compatible(
        pipeline.controlnet, pipeline.unet, pipeline.text_encoder, str(path), str(path)
    )
    meta = path / 'earthsynth.json'
    if not meta.exists():
        return pipeline, {}
    return pipeline, {'condition_encoding': json.loads(meta.read_text())['condition_encoding']}


def pretrained_pipeline(
    controlnet: str | Path = EARTHSYNTH_ID,
    base: str | Path | None = None,
    subfolder: str | None = None,
    family: Literal['text2earth'] | None = None,
) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline of a checkpoint of any family, detected as ``Synthesizer.from_pretrained`` says.

    Args:
        controlnet: as for :meth:`.Synthesizer.from_pretrained`.
        base: as for :meth:`.Synthesizer.from_pretrained`.
        subfolder: as for :meth:`.Synthesizer.from_pretrained`.
        family: as for :meth:`.Synthesizer.from_pretrained`.

    Returns:
        The pipeline, and the :class:`.Synthesizer` settings the export records
        (``condition_encoding`` of a full pipeline export of ours; Text2Earth's sampling
        defaults; else none).

    Raises:
        FileNotFoundError: if a local path does not exist.
        ValueError: if a folder holds neither a pipeline nor a ControlNet, if loading fails,
            if the ControlNet does not fit the base, for an unknown ``family`` or for a
            ``base``/``subfolder`` with a (complete) Text2Earth folder.
    """
    path = Path(controlnet)
    _check_exists(controlnet, 'ControlNet checkpoint')
    if family not in (None, 'text2earth'):
        raise ValueError(f"family: only 'text2earth' is named, others are detected; got {family!r}")
    if is_super_resolution_export(path):  # SuperResolutionTask's full export
        return low_res_pipeline(path), {}
    if is_temporal_export(path):  # TemporalControlNetTask's full export
        return temporal_pipeline(path), {}
    if family == 'text2earth' or is_text2earth(controlnet):
        if base is not None or subfolder is not None:
            raise ValueError(f'{controlnet}: a Text2Earth folder is complete (no base/subfolder)')
        return build_text_pipeline(text2earth_parts(controlnet)), dict(TEXT2EARTH_DEFAULTS)
    temporal_folder = find_temporal_controlnet(path) if path.is_dir() else None
    if temporal_folder is not None:  # their controlnet3d release
        return build_pipeline(*_temporal_release_parts(temporal_folder, path, base)), {}
    sr_folder = find_diffusionsat_controlnet(path) if path.is_dir() else None
    if sr_folder is not None:
        return build_pipeline(*_super_resolution_parts(sr_folder, base)), {}
    if path.is_dir() and is_multicontrol(path):
        return _multicontrol_pipeline(path, base), {}
    unet_folder = find_diffusionsat_unet(path) if path.is_dir() else None
    if unet_folder is not None:
        if base is not None:
            _check_exists(base, 'Stable Diffusion base')
        return build_text_pipeline(diffusionsat_parts(path, unet_folder, base)), {}
    base = SD15_ID if base is None else base
    if (path / 'model_index.json').exists():
        return _exported_pipeline(path)
    if subfolder is None and str(controlnet) == EARTHSYNTH_ID:
        subfolder = EARTHSYNTH_SUBFOLDER
    if subfolder is None and path.is_dir() and not (path / 'config.json').exists():
        if (path / EARTHSYNTH_SUBFOLDER / 'config.json').exists():  # our ControlNet-only export
            subfolder = EARTHSYNTH_SUBFOLDER
    _check_exists(base, 'Stable Diffusion base')
    try:
        model = load_controlnet(controlnet, subfolder)
    except (OSError, KeyError) as error:
        _raise_if_unreachable(controlnet, error)
        message = f'{controlnet}: cannot load a diffusers ControlNet ({error})'
        raise ValueError(message) from error
    try:
        parts = pretrained_parts(base)
    except (OSError, ValueError, KeyError) as error:
        _raise_if_unreachable(base, error)
        raise ValueError(
            f'{base}: cannot load the Stable Diffusion base (expected a diffusers '
            f'folder or hub id with unet/, vae/, text_encoder/, tokenizer/, '
            f'scheduler/): {error}'
        ) from error
    check_compatible(model, parts.unet, parts.text_encoder, str(controlnet), str(base))
    return build_pipeline(parts, model), {}


def tiny_pipeline(seed: int = 0, image_size: int = 64, family: Family = 'earthsynth') -> Pipeline:
    """The untrained tiny-preset pipeline of a family (see :meth:`.Synthesizer.tiny`).

    Raises:
        ValueError: for an unknown family.
    """
    match family:
        case 'earthsynth':
            parts = tiny_parts(seed, image_size)
            return build_pipeline(parts, tiny_controlnet(parts.unet))
        case 'diffusionsat':
            return build_text_pipeline(tiny_diffusionsat_parts(seed, image_size))
        case 'diffusionsat_sr':
            parts = tiny_diffusionsat_parts(seed, image_size)
            controlnet = tiny_diffusionsat_controlnet(parts.unet)
            return build_pipeline(parts, controlnet, LowResControlNetPipeline)
        case 'text2earth' | 'text2earth_inpainting':
            parts = tiny_text2earth_parts(seed, image_size, family == 'text2earth_inpainting')
            return build_text_pipeline(parts)
        case 'multicontrol':
            parts = tiny_parts(seed, image_size)
            channels = {name: spec.channels for name, spec in CONTROLS.items()}
            return build_pipeline(parts, tiny_multicontrol(parts.unet, channels))
        case 'multispectral':
            parts = tiny_parts(seed, image_size)
            bands = MULTISPECTRAL_BANDS['sentinel2']
            parts.vae = tiny_multispectral_vae(bands, seed=seed + 1, sample_size=image_size)
            return build_pipeline(parts, tiny_controlnet(parts.unet))
        case _:
            raise ValueError(f'family must be one of {get_args(Family)}, got {family!r}')


__all__ = ('Pipeline', 'pretrained_pipeline', 'tiny_pipeline')
