"""The CPU dense path's coincidence counts equal the two-matmul float reference exactly.

``crossbar._sparse_update._int8_counts`` multiplies 0/±1 int8 trains with int32 sums; ``_packed_counts`` (the
fallback without an int8 matmul) weights negative pulses by powers of ``M = batch*slots + 1`` and reads
``n_up`` / ``n_down`` back from the digits of one float matmul. On the same drawn trains both must give exactly
the numbers of ``crossbar.update._dense_counts`` (every sign pattern, both compute dtypes, long trains).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import crossbar._sparse_update as su
from crossbar.update import UpdateParameters, _dense_counts, _draw_dense_trains, _plan_trains


def _trains(batch: int, n_r: int, n_c: int, rows: int, cols: int, x_signs: str, d_signs: str, lr: float,
            desired_bl: int, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_c, cols, generator=g, dtype=dtype) * (torch.rand(batch, n_c, cols, generator=g) < 0.8)
    d = torch.randn(batch, n_r, rows, generator=g, dtype=dtype) * (torch.rand(batch, n_r, rows, generator=g) < 0.8)
    x = {"mixed": x, "pos": x.abs(), "neg": -x.abs()}[x_signs]
    d = {"mixed": d, "pos": d.abs(), "neg": -d.abs()}[d_signs]
    plan = _plan_trains(x, d, lr, 0.01, UpdateParameters(desired_bl=desired_bl), g, trim_slots=False)
    return _draw_dense_trains(plan, g)


def _clone(trains):
    return trains._replace(x_bits=trains.x_bits.clone(), d_bits=trains.d_bits.clone())


@settings(max_examples=80, deadline=None)
@given(batch=st.integers(1, 12), n_r=st.integers(1, 3), n_c=st.integers(1, 3), rows=st.integers(1, 9),
       cols=st.integers(1, 9), x_signs=st.sampled_from(["mixed", "pos", "neg"]),
       d_signs=st.sampled_from(["mixed", "pos", "neg"]), lr=st.sampled_from([0.05, -0.3, 1.0, 0.002]),
       desired_bl=st.sampled_from([1, 3, 31]), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**31 - 1))
def test_packed_count_equals_the_two_matmul_count(batch, n_r, n_c, rows, cols, x_signs, d_signs, lr, desired_bl,
                                                  dtype, seed) -> None:
    trains = _trains(batch, n_r, n_c, rows, cols, x_signs, d_signs, lr, desired_bl, dtype, seed)
    ref_up, ref_down, _ = _dense_counts(trains)
    n_up, n_down = su._packed_counts(_clone(trains))
    assert n_up.dtype == ref_up.dtype and n_up.shape == ref_up.shape
    assert torch.equal(n_up, ref_up) and torch.equal(n_down, ref_down)
    n_up, n_down = su._int8_counts(_clone(trains))                # int32 counts, the same numbers
    assert n_up.dtype == n_down.dtype == torch.int32 and n_up.shape == ref_up.shape
    assert torch.equal(n_up.to(ref_up.dtype), ref_up) and torch.equal(n_down.to(ref_down.dtype), ref_down)


def test_long_mixed_trains_near_and_beyond_the_exact_range() -> None:
    """float32, mixed signs: K = 160 slots x samples (the largest packed, M**3 <= 2**22), K = 161 (the two-matmul
    fallback) and a one-sided case with K = 2000 (packed with one digit); many devices with large counts (int8:
    counts far beyond int8's range)."""
    for batch, desired_bl, x_signs in ((160, 1, "mixed"), (161, 1, "mixed"), (80, 2, "mixed"),
                                       (1000, 2, "pos"), (256, 1, "mixed"), (128, 2, "pos")):
        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, 1, 6, generator=g)
        x = x.abs() if x_signs == "pos" else x
        d = torch.randn(batch, 1, 5, generator=g)
        # lr large: every line fires in almost every slot, so counts reach ~K (the digits' full range)
        plan = _plan_trains(x, d, 50.0, 0.01, UpdateParameters(desired_bl=desired_bl), g, trim_slots=False)
        trains = _draw_dense_trains(plan, g)
        ref_up, ref_down, _ = _dense_counts(trains)
        assert float((ref_up + ref_down).max()) > 0.3 * batch * desired_bl
        n_up, n_down = su._packed_counts(_clone(trains))
        assert torch.equal(n_up, ref_up) and torch.equal(n_down, ref_down)
        n_up, n_down = su._int8_counts(_clone(trains))             # int8 with int32 sums: exact at any length
        assert torch.equal(n_up.to(ref_up.dtype), ref_up) and torch.equal(n_down.to(ref_down.dtype), ref_down)


def test_floor_div_is_exact_over_its_whole_float32_range() -> None:
    """Every integer 0 <= s < 2**22 (float32) against float64 floor division, for the digit bases M = K + 1 the
    packed count uses at the ends of its ranges (two digits: M**3 <= 2**22, M <= 161; one digit: M <= 2048)."""
    s = torch.arange(0, 2**22, dtype=torch.float32)
    for m in (2, 3, 41, 65, 159, 161, 862, 2048):     # 41, 159, 862: where floor(s · fl(1/m)) alone is wrong
        q, r = su._floor_div(s.clone(), float(m))
        want = torch.div(s.double(), m, rounding_mode="floor")
        assert torch.equal(q.double(), want) and torch.equal(r.double(), s.double() - m * want), m


@settings(max_examples=80, deadline=None)
@given(batch=st.integers(1, 9), n_r=st.integers(1, 3), n_c=st.integers(1, 3), per_row=st.booleans(),
       lr=st.sampled_from([0.05, -0.3, 1.0, 0.002, 1e-7, 40.0]), dw=st.sampled_from([0.001, 0.0137, 0.3]),
       desired_bl=st.sampled_from([1, 5, 31]), bl_management=st.booleans(), grad_scale=st.sampled_from([1.0, 0.37]),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**31 - 1))
def test_host_scales_are_bit_identical_to_the_tensor_scales(batch, n_r, n_c, per_row, lr, dw, desired_bl,
                                                            bl_management, grad_scale, dtype, seed) -> None:
    """The numpy form of the update management (CPU, plain-number lr) against the 0-d-tensor torch form and the
    sync-free (GPU) form, on batches that mix empty samples (a zero input or error), over-budget and ordinary ones."""
    from crossbar.update import _scales
    from devices.host import no_host_reads

    g = torch.Generator().manual_seed(seed)
    x_shape = (batch, n_r if per_row else 1, n_c) if per_row or seed % 2 else (batch, n_c)
    x_max = torch.rand(x_shape, generator=g, dtype=dtype).mul_(torch.rand(1, generator=g, dtype=dtype) * 5)
    d_max = torch.rand(batch, n_r, generator=g, dtype=dtype).mul_(torch.rand(1, generator=g, dtype=dtype) * 0.3)
    x_max[torch.rand(x_shape, generator=g) < 0.2] = 0.0
    d_max[torch.rand(batch, n_r, generator=g) < 0.2] = 0.0
    cfg = UpdateParameters(desired_bl=desired_bl, update_bl_management=bl_management, um_grad_scale=grad_scale)
    host = _scales(x_max, d_max, lr, dw, cfg)
    ref = _scales(x_max, d_max, torch.tensor(lr, dtype=dtype), torch.tensor(dw, dtype=dtype), cfg)
    with no_host_reads():
        sync_free = _scales(x_max, d_max, lr, dw, cfg)
    for h, r, f in zip(host, ref, sync_free):
        assert h.dtype == r.dtype == f.dtype and h.shape == r.shape
        assert torch.equal(h, r.expand_as(h)), (h, r)
        assert torch.equal(h, f.expand_as(h)), (h, f)


# --- which kernel the dense count uses (crossbar._sparse_update.int8_counts_mode) ---------------------------------

def test_cpu_flags_reads_the_flags_line(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2\n")
    assert su.cpu_flags(str(info)) == frozenset({"fpu", "sse2", "avx2", "avx512f", "avx512_vnni"})   # the first CPU's
    info.write_text("processor\t: 0\nFeatures\t: fp asimd\n")                # aarch64 names them otherwise
    assert su.cpu_flags(str(info)) == frozenset()
    assert su.cpu_flags(str(tmp_path / "missing")) == frozenset()                   # no such file (another OS)


@pytest.mark.parametrize("setting, flags, works, want", [
    (None, {"avx2"}, True, False),                       # AVX2 only: torch's int8 matmul is a scalar loop there
    ("auto", {"avx2", "avx512f", "avx512_vnni"}, True, True),
    (" AUTO ", {"amx_int8", "avx512f"}, True, True),
    ("", {"avx512f", "avx512bw"}, True, False),          # AVX-512 without VNNI: not taken by auto
    ("on", {"avx2"}, True, True),
    ("off", {"avx512_vnni"}, True, False),
    ("on", {"avx512_vnni"}, False, False),               # a torch without a CPU int8 matmul cannot be forced
])
def test_int8_counts_mode(setting, flags, works, want) -> None:
    use, why = su.int8_counts_mode(setting, frozenset(flags), works)
    assert use is want
    assert why.startswith("int8 matmuls" if want else "float matmuls")
    # forcing int8 on a CPU without int8 dot-product instructions says what to expect
    assert ("may be a slow loop" in why) == (want and not flags & {"avx512_vnni", "amx_int8"})


def test_int8_counts_mode_rejects_an_unknown_setting() -> None:
    with pytest.raises(ValueError, match=r"IMC_GRAPES_INT8_COUNTS must be one of auto, on, off, got 'yes'"):
        su.int8_counts_mode("yes", frozenset(), True)


def test_the_import_time_choice_is_the_recorded_one() -> None:
    import os

    import crossbar
    from imc_grapes.versions import versions

    use, why = su.int8_counts_mode(os.environ.get(su.INT8_COUNTS_ENV), su.cpu_flags(), su._int8_matmul_works())
    assert (su._INT8_MM, su.CPU_PULSE_COUNTS) == (use, why) and crossbar.CPU_PULSE_COUNTS == why
    assert versions()["cpu_pulse_counts"] == why


def test_the_environment_variable_sets_the_kernel_at_import() -> None:
    import os
    import subprocess
    import sys

    def run(value: str) -> subprocess.CompletedProcess:
        env = {**os.environ, su.INT8_COUNTS_ENV: value}
        return subprocess.run([sys.executable, "-c", "import crossbar; print(crossbar.CPU_PULSE_COUNTS)"],
                              env=env, capture_output=True, text=True, timeout=120)

    off = run("off")
    assert off.returncode == 0 and off.stdout.strip() == "float matmuls (IMC_GRAPES_INT8_COUNTS=off)"
    bad = run("fast")     # the import goes on (imc-grapes --help works); the check and every count raise
    msg = "IMC_GRAPES_INT8_COUNTS must be one of auto, on, off, got 'fast'"
    assert bad.returncode == 0 and bad.stdout.strip() == f"invalid ({msg})"
    check = subprocess.run([sys.executable, "-c", "import crossbar; crossbar.check_int8_counts_env()"],
                           env={**os.environ, su.INT8_COUNTS_ENV: "fast"}, capture_output=True, text=True,
                           timeout=120)
    assert check.returncode != 0 and f"ValueError: {msg}" in check.stderr


def test_an_invalid_setting_raises_at_the_first_count(monkeypatch: pytest.MonkeyPatch) -> None:
    msg = "IMC_GRAPES_INT8_COUNTS must be one of auto, on, off, got 'fast'"
    monkeypatch.setattr(su, "_INT8_COUNTS_ERROR", msg)
    x, d = torch.full((1, 1, 3), 0.5), torch.full((1, 1, 2), 0.5)
    with pytest.raises(ValueError, match=msg):
        su.check_int8_counts_env()
    with pytest.raises(ValueError, match=msg):
        su.cpu_pulse_counts(x, d, 0.1, 0.01, UpdateParameters(), torch.Generator().manual_seed(0))


def _reference_counts(trains) -> tuple[np.ndarray, np.ndarray]:
    """``(n_up, n_down)`` ``[R, C, rows, cols]`` straight from the definition, in int64 numpy: a device counts one
    coincidence per slot in which both of its lines fire, *up* when their signs differ."""
    x_bits = trains.x_bits.numpy().astype(np.int64)                       # [R, C, batch, slot, cols]
    d_bits = trains.d_bits.numpy().astype(np.int64)                       # [R, C, batch, slot, rows]
    n_r, n_c = x_bits.shape[:2]
    x_sign = np.broadcast_to(trains.x_sign.numpy(), (n_r, n_c) + trains.x_sign.shape[2:])
    d_sign = trains.d_sign.numpy()
    d_sign = np.broadcast_to(d_sign[:, None] if d_sign.ndim == 3 else d_sign, (n_r, n_c) + d_sign.shape[-2:])
    n_up = np.zeros((n_r, n_c, d_bits.shape[-1], x_bits.shape[-1]), dtype=np.int64)
    n_down = np.zeros_like(n_up)
    for sd in (-1, 1):
        for sx in (-1, 1):
            d_part = d_bits * (d_sign == sd)[:, :, :, None, :]
            x_part = x_bits * (x_sign == sx)[:, :, :, None, :]
            both = np.einsum("rcbsi,rcbsj->rcij", d_part, x_part)
            if sd == sx:
                n_down += both
            else:
                n_up += both
    return n_up, n_down


@pytest.mark.parametrize("rows, cols, x_signs, dtype", [(16, 9, "mixed", torch.float32),
                                                         (16, 9, "pos", torch.float32),
                                                         (32, 27, "mixed", torch.float64),
                                                         (20, 3, "neg", torch.float32)])
def test_counts_over_many_slots_in_the_swapped_orientation(rows, cols, x_signs, dtype) -> None:
    """Over >= 1,024 slots with few input lines (a CNN's first layer) the counts multiply ``xᵀ d`` (faster on the
    CPU); both counts must still give the numbers of the definition (an independent numpy count), laid out
    ``[R, C, rows, cols]`` and contiguous. (float32 mixed: the two-matmul count; one-sided inputs or float64:
    packed.)"""
    from crossbar.update import _swap_count_operands
    trains = _trains(1100, 1, 2, rows, cols, x_signs, "mixed", 0.05, 1, dtype, seed=rows + cols)
    assert _swap_count_operands(trains.x_bits.device, 1100, rows, cols)
    want_up, want_down = _reference_counts(trains)
    assert want_up.sum() > 100 and want_down.sum() > 100
    for n_up, n_down in (_dense_counts(_clone(trains))[:2], su._packed_counts(_clone(trains))):
        assert n_up.shape == n_down.shape == (1, 2, rows, cols) and n_up.is_contiguous() and n_down.is_contiguous()
        assert np.array_equal(n_up.numpy().astype(np.int64), want_up)
        assert np.array_equal(n_down.numpy().astype(np.int64), want_down)


@pytest.mark.parametrize("rows, cols, x_signs, d_signs, swap", [(16, 9, "mixed", "mixed", True),
                                                                (16, 9, "pos", "mixed", False),
                                                                (1, 12, "mixed", "neg", False),
                                                                (24, 40, "neg", "pos", False)])
def test_the_bfloat16_count_branch_gives_the_numbers_of_the_definition(monkeypatch, rows, cols, x_signs, d_signs,
                                                                       swap) -> None:
    """The CUDA branch of ``_dense_counts`` (bfloat16 operands, float32 sums: ``bmm(out_dtype=...)``, which exists
    on CUDA only) run on the CPU with that matmul emulated in float32: its casts, sign products, the two products'
    combination into ``n_up``/``n_down`` and the layout (also swapped) give the independent numpy counts. That
    cuBLAS's bfloat16 sums equal the float32 matmul's is checked on a GPU (``benchmarks/check_crossbar_cuda.py``,
    ``bf16_counts``: equal in every device of four cases on an H200)."""
    import crossbar.update as upd

    seen, float_bmm = [], torch.bmm

    def bmm(a, b, out_dtype=None):
        assert a.dtype == b.dtype == torch.bfloat16 and out_dtype == torch.float32
        seen.append(a.shape)
        return float_bmm(a.float(), b.float())

    monkeypatch.setattr(upd, "_count_operand_dtype", lambda device, dtype, k_len: torch.bfloat16)
    monkeypatch.setattr(upd, "_swap_count_operands", lambda device, k_len, rows, cols: swap)
    monkeypatch.setattr(upd.torch, "bmm", bmm)
    trains = _trains(300, 2, 3, rows, cols, x_signs, d_signs, 0.05, 4, torch.float32, seed=rows * cols)
    want_up, want_down = _reference_counts(trains)
    assert want_up.sum() + want_down.sum() > 100
    n_up, n_down, _ = _dense_counts(_clone(trains))
    assert len(seen) == 2 and n_up.dtype == n_down.dtype == torch.float32
    assert n_up.shape == n_down.shape == (2, 3, rows, cols) and n_up.is_contiguous() and n_down.is_contiguous()
    assert np.array_equal(n_up.numpy().astype(np.int64), want_up)
    assert np.array_equal(n_down.numpy().astype(np.int64), want_down)


def test_the_bfloat16_counts_are_taken_on_cuda_for_long_float32_trains_only(monkeypatch) -> None:
    """``_count_operand_dtype``: bfloat16 for float32 trains on CUDA whose count matmuls are between
    COUNT_BF16_MIN_SLOTS (shorter ones were slower on an H200) and 2^24 slots (float32 sums of integers exact);
    never on the CPU, for float64, or with the GPU check's switch off."""
    import crossbar.update as upd

    cuda, cpu, lo, hi = torch.device("cuda"), torch.device("cpu"), upd.COUNT_BF16_MIN_SLOTS, upd.COUNT_BF16_MAX_SLOTS
    assert hi == 2 ** 24 and 1984 < lo <= 7936            # the measured loss and win (see COUNT_BF16_MIN_SLOTS)
    assert upd._count_operand_dtype(cuda, torch.float32, lo) == torch.bfloat16
    assert upd._count_operand_dtype(cuda, torch.float32, hi) == torch.bfloat16
    for device, dtype, k_len in ((cuda, torch.float32, lo - 1), (cuda, torch.float32, hi + 1),
                                 (cpu, torch.float32, lo), (cuda, torch.float64, lo)):
        assert upd._count_operand_dtype(device, dtype, k_len) is None
    monkeypatch.setattr(upd, "count_bf16", False)
    assert upd._count_operand_dtype(cuda, torch.float32, lo) is None
