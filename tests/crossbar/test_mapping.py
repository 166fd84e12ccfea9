"""Logical matrix <-> tile grid, and what the grid means for the MVM (per-tile ADCs)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossbar import CrossbarConfig, IOParameters, TileArray, TileGrid
from devices import IdealDevice

SETTINGS = settings(max_examples=50, deadline=None)


@SETTINGS
@given(out=st.integers(1, 40), inp=st.integers(1, 40), tr=st.integers(1, 16), tc=st.integers(1, 16),
       seed=st.integers(0, 1000))
def test_round_trip_exact_for_any_shape(out: int, inp: int, tr: int, tc: int, seed: int) -> None:
    grid = TileGrid(out, inp, tr, tc)
    w = torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))
    tiles = grid.to_tiles(w)
    n_r, n_c = -(-out // tr), -(-inp // tc)
    rows, cols = -(-out // n_r), -(-inp // n_c)                  # spread evenly over the tiles
    assert rows <= tr and cols <= tc and n_r * rows - out < n_r and n_c * cols - inp < n_c
    assert tiles.shape == (n_r * n_c, rows, cols)
    assert torch.equal(grid.from_tiles(tiles), w)
    # every tile holds its block, padding is zero (independent slicing of the padded matrix)
    padded = torch.zeros(n_r * rows, n_c * cols)
    padded[:out, :inp] = w
    for r in range(n_r):
        for c in range(n_c):
            block = padded[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols]
            assert torch.equal(tiles[r * n_c + c], block)
    assert int(grid.tile_mask().sum()) == out * inp
    x = torch.randn(3, inp)
    assert torch.equal(grid.merge_inputs(grid.split_inputs(x)), x)
    assert (grid.split_inputs(x).reshape(3, -1)[:, inp:] == 0).all()
    d = torch.randn(2, 5, out)
    assert torch.equal(grid.merge_outputs(grid.split_outputs(d)), d)


def test_grid_geometry() -> None:
    g = TileGrid(784, 256, 256, 256)
    assert (g.n_row_tiles, g.n_col_tiles, g.rows, g.cols) == (4, 1, 196, 256)
    g = TileGrid(10, 785)                                      # 10 of 256 rows; 785 -> 4 x 197 columns
    assert (g.n_row_tiles, g.n_col_tiles, g.rows, g.cols, g.padded_in) == (1, 4, 10, 197, 788)
    g = TileGrid(2048, 2048)
    assert (g.n_tiles, g.rows, g.cols) == (64, 256, 256)


@pytest.mark.parametrize("kwargs, field", [(dict(out_features=0, in_features=3), "out_features"),
                                           (dict(out_features=3, in_features=3, tile_cols=0), "tile_cols")])
def test_grid_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"TileGrid.{field}"):
        TileGrid(**kwargs)


def test_grid_and_config_take_numpy_integer_sizes() -> None:
    """A sweep gives sizes as numpy integers: ``TileGrid(np.int64(784), ...)`` was refused as "TileGrid.out_features
    must be an integer >= 1, got np.int64(784)" (a false statement). Any integer ``operator.index`` takes is now the
    Python int it holds: 784 outputs on 256-row tiles are ceil(784/256) = 4 row tiles of ceil(784/4) = 196 rows."""
    g = TileGrid(np.int64(784), np.int32(10), np.uint16(256), torch.tensor(256))
    assert all(type(v) is int for v in (g.out_features, g.in_features, g.tile_rows, g.tile_cols))
    assert (g.n_row_tiles, g.n_col_tiles, g.rows, g.cols) == (4, 1, 196, 10)
    assert g == TileGrid(784, 10, 256, 256) and hash(g) == hash(TileGrid(784, 10, 256, 256))
    cfg = CrossbarConfig(tile_rows=np.int64(3), tile_cols=np.int8(4))
    assert (type(cfg.tile_rows), type(cfg.tile_cols)) == (int, int) and cfg == CrossbarConfig(tile_rows=3, tile_cols=4)


@pytest.mark.parametrize("value", [True, np.True_, torch.tensor(True), 4.0, np.float64(4.0), torch.tensor(4.0), "4",
                                   np.int64(0), -1])
@pytest.mark.parametrize("make,field", [(lambda v: TileGrid(v, 3), "TileGrid.out_features"),
                                        (lambda v: TileGrid(3, 3, tile_cols=v), "TileGrid.tile_cols"),
                                        (lambda v: CrossbarConfig(tile_rows=v), "CrossbarConfig.tile_rows")])
def test_grid_and_config_still_refuse_bools_floats_and_sizes_below_one(make, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be an integer >= 1, got {re.escape(repr(value))}$"):
        make(value)


def test_to_tiles_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="to_tiles"):
        TileGrid(4, 5).to_tiles(torch.zeros(5, 4))


def perfect_config(tile_rows: int, tile_cols: int) -> CrossbarConfig:
    return CrossbarConfig.perfect(device=IdealDevice(), tile_rows=tile_rows, tile_cols=tile_cols)


@pytest.mark.parametrize("shape, tile", [((37, 53), (8, 16)), ((5, 300), (256, 256)), ((300, 5), (64, 4))])
def test_multi_tile_forward_backward_equal_big_matmul(shape: tuple[int, int], tile: tuple[int, int]) -> None:
    out, inp = shape
    torch.manual_seed(0)
    arr = TileArray(out, inp, perfect_config(*tile), dtype=torch.float64, seed=1)
    w = torch.randn(out, inp, dtype=torch.float64)
    arr.program(w)
    x = torch.randn(9, inp, dtype=torch.float64)
    d = torch.randn(9, out, dtype=torch.float64)
    torch.testing.assert_close(arr.forward(x), x @ w.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(arr.backward(d), d @ w, rtol=1e-12, atol=1e-12)


def test_partial_sums_go_through_per_tile_adcs() -> None:
    # one output row over two tiles of 16 inputs: partial sums +20 and -15, total +5.
    io = IOParameters(out_noise=0.0, out_res=0, inp_res=0, noise_management="none", bound_management="none",
                      out_bound=12.0)
    w = torch.cat([torch.full((1, 16), 1.25), torch.full((1, 16), -15 / 16)], dim=1)
    x = torch.ones(1, 32)
    two_tiles = TileArray(1, 32, CrossbarConfig(device=IdealDevice(), forward=io, tile_rows=8, tile_cols=16),
                          seed=0)
    one_tile = TileArray(1, 32, CrossbarConfig(device=IdealDevice(), forward=io, tile_rows=8, tile_cols=32),
                         seed=0)
    two_tiles.program(w)
    one_tile.program(w)
    # each tile saturates at +-12 before the digital sum: 12 - 12 = 0; one big tile does not saturate: 5
    assert two_tiles.forward(x).item() == pytest.approx(0.0)
    assert one_tile.forward(x).item() == pytest.approx(5.0)


def test_leading_dims_cut_each_matrix_alone() -> None:
    """``[E, out, in]`` (model replicas) maps like E separate matrices: numpy-style per-matrix reference."""
    grid = TileGrid(5, 7, tile_rows=2, tile_cols=3)
    w = torch.randn(4, 5, 7)
    tiles = grid.to_tiles(w)
    assert tiles.shape == (4, grid.n_tiles, 2, 3)
    for e in range(4):
        assert torch.equal(tiles[e], grid.to_tiles(w[e]))
    assert torch.equal(grid.from_tiles(tiles), w)
    with pytest.raises(ValueError, match="from_tiles"):
        grid.from_tiles(tiles[..., :2])
