# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""What the fake-data scripts next to it share: random images, striped masks, class folders.

The scripts run as ``python tests/data/<name>/data.py`` and import this module with
``sys.path.insert(0, str(Path(__file__).parents[1]))``.
"""

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

#: The splits of the released split lists, and which of a class's two files each lists.
SPLIT_FILES = {'train': 0, 'val': 1, 'test': 1}


def fresh_folder(path: Path) -> Path:
    """Remove ``path`` if there and make it again, empty (with its parents)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def random_rgb(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random uint8 RGB image [size, size, 3]."""
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def save_random_rgb(rng: np.random.Generator, path: Path, size: int) -> None:
    """Write a random RGB image to ``path`` (format from its suffix)."""
    Image.fromarray(random_rgb(rng, size)).save(path)


def striped_colour_mask(colours: Sequence[tuple[int, int, int]], size: int) -> np.ndarray:
    """An RGB colour mask [size, size, 3] whose row ``r`` has colour ``r % len(colours)``."""
    rows = np.arange(size) % len(colours)
    return np.array(colours, dtype=np.uint8)[rows][:, None].repeat(size, axis=1)


def striped_value_mask(values: int, size: int) -> np.ndarray:
    """A uint8 mask [size, size] whose row ``r`` holds the value ``r % values``."""
    return np.repeat((np.arange(size) % values)[:, None], size, axis=1).astype(np.uint8)


def write_geotiff(path: Path, image: np.ndarray) -> None:
    """Write a band-first array [bands, H, W] as a GeoTIFF of its dtype."""
    bands, height, width = image.shape
    profile = {'driver': 'GTiff', 'dtype': str(image.dtype), 'count': bands}
    with rasterio.open(path, 'w', width=width, height=height, **profile) as f:
        f.write(image)


def write_class_folders(
    root: Path,
    classes: Sequence[str],
    file_name: Callable[[str, int], str],
    write_image: Callable[[Path], None],
    list_path: Callable[[str], Path],
    listed_as: Callable[[str], str] = str,
) -> None:
    """Two images per class in ``root/<class>/`` and the split lists naming them.

    Args:
        root: the folder of the class folders (rewritten).
        classes: the class folder names.
        file_name: the file name of a class's image 0 (train) or 1 (val and test).
        write_image: writes one image to a path.
        list_path: the split list file of a split.
        listed_as: the name a split list gives a file (EuroSAT lists its .tif as .jpg).
    """
    fresh_folder(root)
    lists: dict[str, list[str]] = {split: [] for split in SPLIT_FILES}
    for name in classes:
        (root / name).mkdir()
        names = [file_name(name, n) for n in range(2)]
        for file in names:
            write_image(root / name / file)
        for split, n in SPLIT_FILES.items():
            lists[split].append(listed_as(names[n]))
    for split, listed in lists.items():
        list_path(split).write_text('\n'.join(listed) + '\n')
