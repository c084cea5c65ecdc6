# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Counterfactual box layouts: boxes moved, added from other scenes, classes swapped."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class BoxRecomposer:
    """Recompose a detection layout into an unrealistic but logical one (CF-Comp for boxes).

    Each box moves, with probability ``move``, to a random place in the image where it
    overlaps no box placed before it (it stays where it was when none is found in
    ``attempts`` tries); with probability ``swap`` its class becomes another class seen at
    its size (the box's side, ``sqrt(area)``, inside that class's range of sides in the
    fitted layouts, widened by ``size_margin``); and with probability ``add`` up to
    ``max_added`` boxes of other scenes (their size and class) are added at free places.
    Boxes and classes are vocabulary ids in the layouts' pixels; every draw comes from the
    generator given, so a layout's recomposition depends on its seed only.

    Args:
        move: probability that a box moves.
        add: probability that boxes from other scenes are added.
        swap: probability that a box's class is swapped.
        max_added: most boxes added to one layout.
        attempts: placements tried per box.
        size_margin: relative widening of each class's range of sides.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        move: float = 0.5,
        add: float = 0.5,
        swap: float = 0.2,
        max_added: int = 3,
        attempts: int = 20,
        size_margin: float = 0.25,
    ) -> None:
        for name, value in (('move', move), ('add', add), ('swap', swap)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        if max_added < 0 or attempts < 1 or size_margin < 0:
            raise ValueError(
                'expected max_added >= 0, attempts >= 1 and size_margin >= 0, got '
                f'{max_added}, {attempts} and {size_margin}'
            )
        self.move, self.add, self.swap = move, add, swap
        self.max_added, self.attempts, self.size_margin = max_added, attempts, size_margin
        #: Boxes of every fitted layout: float [M, 2] (width, height) and int64 [M] ids.
        self.donor_sizes = torch.zeros(0, 2)
        self.donor_ids = torch.zeros(0, dtype=torch.long)
        #: Side range of each class seen: id -> (smallest, largest) ``sqrt(area)``.
        self.sides: dict[int, tuple[float, float]] = {}

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has seen boxes."""
        return bool(len(self.donor_ids))

    def fit(self, layouts: Iterable[tuple[Tensor, Tensor]]) -> BoxRecomposer:
        """Learn donor boxes and each class's sizes from real layouts.

        Args:
            layouts: ``(boxes float [N, 4], vocabulary ids [N])`` per scene, in the pixels
                the recomposed layouts will have.

        Returns:
            The recomposer itself.
        """
        sizes, ids = [], []
        for boxes, labels in layouts:
            boxes = boxes.reshape(-1, 4).float()
            sizes.append(boxes[:, 2:] - boxes[:, :2])
            ids.append(labels.reshape(-1).long())
        self.donor_sizes = torch.cat(sizes) if sizes else torch.zeros(0, 2)
        self.donor_ids = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
        side = self.donor_sizes.prod(1).sqrt()
        self.sides = {
            int(c): (float(side[self.donor_ids == c].min()), float(side[self.donor_ids == c].max()))
            for c in set(self.donor_ids.tolist())
        }
        return self

    def __call__(
        self, boxes: Tensor, ids: Tensor, size: tuple[int, int], generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """A recomposition of one layout.

        Args:
            boxes: float [N, 4] ``(x0, y0, x1, y1)``.
            ids: int64 [N] vocabulary ids.
            size: (height, width) of the image.
            generator: the random draws' generator.

        Returns:
            The new boxes and ids (the given boxes first, in order, then the added ones).
        """
        placed: list[Tensor] = []
        classes: list[int] = []
        for box, class_id in zip(boxes.reshape(-1, 4).float(), ids.reshape(-1).tolist()):
            if self._chance(self.move, generator):
                moved = self._place(box[2:] - box[:2], placed, size, generator)
                box = moved if moved is not None else box
            placed.append(box)
            classes.append(self._swapped(box, class_id, generator))
        if self.fitted and self.max_added and self._chance(self.add, generator):
            count = int(torch.randint(1, self.max_added + 1, (1,), generator=generator))
            for _ in range(count):
                donor = int(torch.randint(len(self.donor_ids), (1,), generator=generator))
                new = self._place(self.donor_sizes[donor], placed, size, generator)
                if new is not None:
                    placed.append(new)
                    classes.append(int(self.donor_ids[donor]))
        out = torch.stack(placed) if placed else torch.zeros(0, 4)
        return out, torch.tensor(classes, dtype=torch.long)

    @staticmethod
    def _chance(probability: float, generator: torch.Generator) -> bool:
        return bool(torch.rand(1, generator=generator) < probability)

    def _place(
        self,
        extent: Tensor,
        placed: list[Tensor],
        size: tuple[int, int],
        generator: torch.Generator,
    ) -> Tensor | None:
        """A box of ``extent`` (width, height) inside the image clear of ``placed``."""
        height, width = size
        w, h = float(extent[0]), float(extent[1])
        if w > width or h > height:
            return None
        for _ in range(self.attempts):
            x0 = float(torch.rand(1, generator=generator)) * (width - w)
            y0 = float(torch.rand(1, generator=generator)) * (height - h)
            box = torch.tensor([x0, y0, x0 + w, y0 + h])
            if not placed or not bool(_overlaps(box, torch.stack(placed)).any()):
                return box
        return None

    def _swapped(self, box: Tensor, class_id: int, generator: torch.Generator) -> int:
        """``class_id`` or, with probability ``swap``, another class seen at this size."""
        if not self._chance(self.swap, generator):
            return class_id
        side = float((box[2:] - box[:2]).prod().sqrt())
        margin = 1.0 + self.size_margin
        plausible = [
            c
            for c, (low, high) in sorted(self.sides.items())
            if c != class_id and low / margin <= side <= high * margin
        ]
        if not plausible:
            return class_id
        return plausible[int(torch.randint(len(plausible), (1,), generator=generator))]


def _overlaps(box: Tensor, others: Tensor) -> Tensor:
    """Whether ``box`` [4] shares area with each of ``others`` [M, 4]: bool [M]."""
    w = torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0])
    h = torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1])
    return (w > 0) & (h > 0)


__all__ = ('BoxRecomposer',)
