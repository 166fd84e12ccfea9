"""devices.host: the guard flags every kind of host read, and switches the engine to its sync-free path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from devices import HostReadError, host_reads_free, no_host_reads
from devices.host import flat_nonzero, host_scalar_math


@pytest.mark.parametrize("read", [
    lambda t: t.sum().item(),
    lambda t: float(t.sum()),
    lambda t: int(t[0]),
    lambda t: bool(t.sum() > 0),
    lambda t: t.tolist(),
    lambda t: t.numpy(),
    lambda t: t.nonzero(),
    lambda t: torch.nonzero(t),
    lambda t: torch.unique(t),
    lambda t: t.unique_consecutive(),
    lambda t: t[t > 1],
    lambda t: t.masked_select(t > 1),
    lambda t: torch.where(t > 1),
    lambda t: torch.bincount(t.long()),
    lambda t: t.repeat_interleave(t.long()),
    lambda t: [0, 1, 2, 3][t.long()[1]],
    lambda t: t.cpu(),
    lambda t: torch.equal(t, t),
    lambda t: t.equal(t),
    lambda t: torch.allclose(t, t),
    lambda t: t.allclose(t),
    lambda t: torch.is_nonzero(t[:1]),
    lambda t: np.asarray(t),
], ids=["item", "float", "int", "bool", "tolist", "numpy", "nonzero", "torch.nonzero", "unique",
        "unique_consecutive", "bool-mask index", "masked_select", "where(cond)", "bincount",
        "repeat_interleave", "index", "cpu", "torch.equal", "Tensor.equal", "torch.allclose", "Tensor.allclose",
        "is_nonzero", "np.asarray"])
def test_guard_flags_every_host_read(read):
    t = torch.tensor([1.0, 2.0, 0.0, 3.0])
    read(t)                                                        # fine outside
    with no_host_reads():
        with pytest.raises(HostReadError, match="host read"):
            read(t)


def test_guard_lets_device_side_work_through():
    t = torch.tensor([1.0, 2.0, 0.0, 3.0])
    with no_host_reads():
        out = torch.where(t > 1, t, 0.0).sum() + t.repeat_interleave(2).sum() \
            + t.masked_fill(t > 1, 0.0).amax() + t[1:3].sum() + t[torch.tensor([0, 2])].sum()
        torch.argmax(t)
        with host_scalar_math():                                   # explicitly marked host arithmetic
            assert float(torch.as_tensor(2.0).sqrt()) == pytest.approx(2 ** 0.5)
    assert float(out) == pytest.approx(5.0 + 12.0 + 1.0 + 2.0 + 1.0)


def test_host_reads_free_only_on_cpu_outside_the_guard():
    assert host_reads_free(torch.zeros(1)) and host_reads_free(torch.device("cpu"))
    assert not host_reads_free(torch.device("cuda")) and not host_reads_free(torch.device("meta"))
    with no_host_reads():
        assert not host_reads_free(torch.zeros(1))
        with no_host_reads():
            assert not host_reads_free(torch.zeros(1))
        assert not host_reads_free(torch.zeros(1))
    assert host_reads_free(torch.zeros(1))
    with pytest.raises(RuntimeError):
        with no_host_reads():
            raise RuntimeError("boom")
    assert host_reads_free(torch.zeros(1))                         # restored after an exception


@pytest.mark.parametrize("dtype", [torch.bool, torch.int8, torch.int32, torch.float32, torch.float64,
                                   torch.bfloat16])
def test_flat_nonzero_is_torchs_flat_nonzero(dtype: torch.dtype) -> None:
    """The numpy route (and the torch fallback for dtypes numpy lacks) gives torch's positions: int64, increasing,
    NaN counted as nonzero (and not as positive), any shape, empty results included."""
    g = torch.Generator().manual_seed(0)
    t = (torch.rand(3, 5, 7, generator=g) < 0.3).to(dtype)
    if dtype != torch.bool:
        t *= -2
    assert t.dtype == dtype
    if dtype.is_floating_point:
        t.view(-1)[4] = float("nan")
    cases = [t, t[:, 1], torch.zeros(4, 4, dtype=dtype), torch.empty(0, dtype=dtype)]
    for c in cases:
        got, want = flat_nonzero(c), c.reshape(-1).nonzero().squeeze(1)
        assert got.dtype == torch.int64 and torch.equal(got, want)
        pos = c if dtype == torch.bool else -c                   # its nonzero values positive (NaN is not > 0)
        got, want = flat_nonzero(pos, positive=True), (pos > 0).reshape(-1).nonzero().squeeze(1)
        assert got.numel() == int((pos > 0).sum())
        assert got.dtype == torch.int64 and torch.equal(got, want)
    with pytest.raises(HostReadError):
        with no_host_reads():
            flat_nonzero(t)
