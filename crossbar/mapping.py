"""Mapping of a logical weight matrix ``[out, in]`` onto a grid of equally sized crossbar tiles.

The matrix needs ``R = ceil(out / tile_rows)`` row blocks and ``C = ceil(in / tile_cols)`` column blocks
of physical tiles. It is spread evenly over them, as aihwkit's mapping does: every tile uses the same
``rows = ceil(out / R)`` of its output lines and ``cols = ceil(in / C)`` of its input lines (a 784-input
layer on 256-column tiles uses 4 tiles x 196 columns, a 10-output layer 10 of the 256 rows). The unused
physical lines of a tile carry no input and their outputs are never read, so they are not simulated
(every tensor is ``[T, rows, cols]``). When a size does not divide evenly, the last block is padded with
zeros (at most ``R - 1`` rows / ``C - 1`` columns; those devices get zero input and their outputs are
dropped; the tile counters do not count them as driven or converted lines). Tile ``t = r * C + c`` holds
rows ``r*rows .. (r+1)*rows`` and columns ``c*cols .. (c+1)*cols``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TileGrid"]


def _as_size(value: Any) -> int | None:
    """``value`` as a Python ``int`` when it is an integer (anything ``operator.index`` takes: a Python or numpy
    integer, e.g. ``numpy.int64`` from a sweep), else None: a bool (also a bool tensor), a float or a string is no
    size, though ``int()`` would turn it into one."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _check_size(layer: str, name: str, value: Any) -> int:
    """``value`` (a feature / channel count) as an ``int``; ``ValueError`` naming ``layer.name`` unless it is an
    integer >= 1 (:func:`_as_size`: a Python or numpy integer, as ``nn.Linear`` / ``nn.Conv2d`` take it; not a bool
    or float). The tile grid would refuse it otherwise, naming its own field (``TileGrid.in_features`` for a conv's
    channels, or for a ``TileArray``'s size), not the one the caller gave."""
    size = _as_size(value)
    if size is None or size < 1:
        raise ValueError(f"{layer}.{name} must be an integer >= 1, got {value!r}")
    return size


@dataclass(frozen=True)
class TileGrid:
    """Geometry of one layer on a grid of tiles (its derived sizes are computed once, on first use: the grid is
    frozen).

    Attributes:
        out_features: logical rows (outputs) of the weight matrix, >= 1.
        in_features: logical columns (inputs), >= 1.
        tile_rows: physical rows (output lines) of one tile, >= 1.
        tile_cols: physical columns (input lines) of one tile, >= 1.
    """

    out_features: int
    in_features: int
    tile_rows: int = 256
    tile_cols: int = 256

    def __post_init__(self) -> None:
        for name in ("out_features", "in_features", "tile_rows", "tile_cols"):
            # a numpy integer (a sweep's value) is stored as the Python int it holds: equal grids compare equal
            object.__setattr__(self, name, _check_size("TileGrid", name, getattr(self, name)))

    @cached_property
    def n_row_tiles(self) -> int:
        """R: number of tile rows (blocks of output lines)."""
        return -(-self.out_features // self.tile_rows)

    @cached_property
    def n_col_tiles(self) -> int:
        """C: number of tile columns (blocks of input lines)."""
        return -(-self.in_features // self.tile_cols)

    @cached_property
    def n_tiles(self) -> int:
        """T = R * C."""
        return self.n_row_tiles * self.n_col_tiles

    @cached_property
    def rows(self) -> int:
        """Rows in use (simulated) per tile: ``ceil(out_features / R)`` (<= tile_rows)."""
        return -(-self.out_features // self.n_row_tiles)

    @cached_property
    def cols(self) -> int:
        """Columns in use (simulated) per tile: ``ceil(in_features / C)`` (<= tile_cols)."""
        return -(-self.in_features // self.n_col_tiles)

    @cached_property
    def tile_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the simulated tiles."""
        return (self.rows, self.cols)

    @cached_property
    def padded_out(self) -> int:
        """``R * rows`` (>= out_features)."""
        return self.n_row_tiles * self.rows

    @cached_property
    def padded_in(self) -> int:
        """``C * cols`` (>= in_features)."""
        return self.n_col_tiles * self.cols

    def _check_last(self, t: Tensor, size: int, what: str) -> None:
        if t.shape[-1] != size:
            raise ValueError(f"TileGrid.{what}: last dimension must be {size}, got shape {tuple(t.shape)}")

    def to_tiles(self, w: Tensor) -> Tensor:
        """Cut ``w: [..., out, in]`` into tiles ``[..., R*C, rows, cols]`` (zero padded; leading dims, e.g. model
        replicas, are kept)."""
        if tuple(w.shape[-2:]) != (self.out_features, self.in_features):
            raise ValueError(f"TileGrid.to_tiles: expected a [{self.out_features}, {self.in_features}] "
                             f"matrix (with optional leading dims), got {tuple(w.shape)}")
        n_r, n_c, lead = self.n_row_tiles, self.n_col_tiles, w.shape[:-2]
        padded = F.pad(w, (0, self.padded_in - self.in_features, 0, self.padded_out - self.out_features))
        tiles = padded.reshape(*lead, n_r, self.rows, n_c, self.cols).transpose(-3, -2)
        return tiles.reshape(*lead, n_r * n_c, self.rows, self.cols)

    def from_tiles(self, tiles: Tensor) -> Tensor:
        """Inverse of :meth:`to_tiles`: ``[..., R*C, rows, cols] -> [..., out, in]`` (padding dropped)."""
        if tuple(tiles.shape[-3:]) != (self.n_tiles, self.rows, self.cols):
            raise ValueError(f"TileGrid.from_tiles: expected [{self.n_tiles}, {self.rows}, {self.cols}] "
                             f"(with optional leading dims), got {tuple(tiles.shape)}")
        n_r, n_c, lead = self.n_row_tiles, self.n_col_tiles, tiles.shape[:-3]
        full = tiles.reshape(*lead, n_r, n_c, self.rows, self.cols).transpose(-3, -2)
        full = full.reshape(*lead, self.padded_out, self.padded_in)
        return full[..., : self.out_features, : self.in_features]

    def split_inputs(self, x: Tensor) -> Tensor:
        """``x: [..., in] -> [..., C, cols]`` (zero padded), the input of each tile column block."""
        self._check_last(x, self.in_features, "split_inputs")
        padded = F.pad(x, (0, self.padded_in - self.in_features)) if self.padded_in > self.in_features else x
        return padded.reshape(*x.shape[:-1], self.n_col_tiles, self.cols)

    def split_outputs(self, d: Tensor) -> Tensor:
        """``d: [..., out] -> [..., R, rows]`` (zero padded), the error of each tile row block."""
        self._check_last(d, self.out_features, "split_outputs")
        padded = F.pad(d, (0, self.padded_out - self.out_features)) if self.padded_out > self.out_features else d
        return padded.reshape(*d.shape[:-1], self.n_row_tiles, self.rows)

    def merge_outputs(self, y: Tensor) -> Tensor:
        """``y: [..., R, rows] -> [..., out]`` (padding dropped)."""
        if tuple(y.shape[-2:]) != (self.n_row_tiles, self.rows):
            raise ValueError(f"TileGrid.merge_outputs: expected [..., {self.n_row_tiles}, {self.rows}], "
                             f"got {tuple(y.shape)}")
        merged = y.reshape(*y.shape[:-2], self.padded_out)
        return merged[..., : self.out_features] if self.padded_out > self.out_features else merged

    def merge_inputs(self, z: Tensor) -> Tensor:
        """``z: [..., C, cols] -> [..., in]`` (padding dropped)."""
        if tuple(z.shape[-2:]) != (self.n_col_tiles, self.cols):
            raise ValueError(f"TileGrid.merge_inputs: expected [..., {self.n_col_tiles}, {self.cols}], "
                             f"got {tuple(z.shape)}")
        merged = z.reshape(*z.shape[:-2], self.padded_in)
        return merged[..., : self.in_features] if self.padded_in > self.in_features else merged

    def tile_mask(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.bool) -> Tensor:
        """``[R*C, rows, cols]`` mask: True where a tile position holds a logical weight (not padding)."""
        ones = torch.ones(self.out_features, self.in_features, device=device, dtype=dtype)
        return self.to_tiles(ones)
