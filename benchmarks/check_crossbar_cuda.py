"""GPU check of the crossbar engine (a script for a CUDA machine, not a test).

Checks, on ``cuda``: (1) forward / backward / update / hardware row and column sums and a full
``AnalogLinear`` + ``AnalogSGD`` training step run without host synchronisation
(``torch.cuda.set_sync_debug_mode("error")``); (2) same seed -> same numbers; (3) the forward error
statistics on the GPU match the CPU ones; (4) a CPU-built model moves with ``.to("cuda")`` and trains; a
CUDA state dict loads on the CPU; (5) float64 works; (6) float16/bfloat16 arrays and the saved-state checks.
Prints one JSON object; exit status 1 if a check failed.

Usage: ``python benchmarks/check_crossbar_cuda.py [--out check.json]``
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossbar import AnalogLinear, AnalogSGD, CrossbarConfig, TileArray, UpdateParameters  # noqa: E402
from devices import IdealDevice  # noqa: E402
from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402


def check_sync_free(dev: torch.device) -> dict[str, str]:
    """Each hot-path operation once under ``set_sync_debug_mode("error")``: "ok" or the traceback."""
    cfg = CrossbarConfig(tile_rows=64, tile_cols=64)
    arr = TileArray(100, 150, cfg, device=dev, seed=0)
    arr.program(torch.randn(100, 150, device=dev) * 0.1)
    x = torch.randn(32, 150, device=dev)
    d = torch.randn(32, 100, device=dev) * 0.01
    model = nn.Sequential(AnalogLinear(150, 64, rpu_config=cfg, device=dev, seed=1), nn.ReLU(),
                          AnalogLinear(64, 10, rpu_config=cfg, device=dev, seed=2))
    opt = AnalogSGD(model.parameters(), lr=0.05)
    y = torch.randint(0, 10, (32,), device=dev)

    def train_step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def train_step_float_update() -> None:  # the same step without the pulsed update (crossbar/update.py)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for m in (model[0], model[2]):
            m.clear_stash()

    ops = {"forward": lambda: arr.forward(x), "backward": lambda: arr.backward(d),
           "update": lambda: arr.update(x, d, 0.1), "row_sums": lambda: arr.row_sums("hardware"),
           "col_sums": lambda: arr.col_sums("hardware"), "train_step_without_update": train_step_float_update,
           "train_step": train_step}
    result = {}
    for name, op in ops.items():
        op()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            op()
            result[name] = "ok"
        except RuntimeError:
            result[name] = "SYNC: " + traceback.format_exc()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
    return result


def check_noise_free_cpu_equals_gpu(dev: torch.device) -> dict[str, float]:
    from crossbar import IOParameters
    from crossbar.periphery import bound_management_rounds
    from devices import IdealDevice
    g = torch.Generator().manual_seed(0)
    w = torch.rand(64, 128, generator=g) * 0.6 - 0.3
    x = torch.randn(2000, 128, generator=g)
    out = {}
    for name, io in (("bm", IOParameters(out_noise=0.0)),
                     ("bm_small_bound", IOParameters(out_noise=0.0, out_bound=2.0)),
                     ("no_bm", IOParameters(out_noise=0.0, bound_management="none"))):
        ys = []
        for device in (torch.device("cpu"), dev):
            # spread-free device: the programmed weights must not depend on the device's random draws
            cfg = CrossbarConfig(device=IdealDevice(), forward=io)
            arr = TileArray(64, 128, cfg, device=device, seed=3)
            arr.program(w.to(device))
            ys.append(arr.forward(x.to(device)).cpu())
            out[f"{name}_passes_{device.type}"] = int(arr.counters["forward_passes"])
        diff = (ys[0] - ys[1]).abs()
        out[f"{name}_max_abs_diff"] = diff.max().item()
        out[f"{name}_differing_fraction"] = (diff > 0).double().mean().item()
        # the matmuls may round differently (BLAS vs cuBLAS), which can move an output across one ADC level: at
        # most one level (out_step in the sample's scale alpha * 2**k), and rarely
        level = io.out_step * x.abs().amax(dim=1, keepdim=True) * 2.0 ** (bound_management_rounds(io) - 1)
        assert bool((diff <= level * 1.0001).all()), f"{name}: CPU and GPU differ by more than one ADC level"
        assert out[f"{name}_differing_fraction"] < 1e-3, f"{name}: CPU and GPU differ in too many outputs"
    return out


def check_determinism(dev: torch.device) -> str:
    outs = []
    for _ in range(2):
        arr = TileArray(300, 200, CrossbarConfig(), device=dev, seed=5)
        arr.program(torch.linspace(-0.3, 0.3, 300 * 200, device=dev).reshape(300, 200))
        x = torch.linspace(-1, 1, 16 * 200, device=dev).reshape(16, 200)
        arr.update(x, torch.linspace(-0.1, 0.1, 16 * 300, device=dev).reshape(16, 300), 0.1)
        outs.append((arr.forward(x), arr.read()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]), "not deterministic"
    return "ok"


def check_cpu_gpu_statistics(dev: torch.device) -> dict[str, float]:
    from crossbar import IOParameters
    g = torch.Generator().manual_seed(0)
    w = torch.rand(64, 128, generator=g) * 0.6 - 0.3
    x = torch.randn(4000, 128, generator=g)
    stats: dict[str, float] = {}
    for cfg_name, io in (("default", IOParameters()), ("no_bm", IOParameters(bound_management="none")),
                         ("noise_only", IOParameters(inp_res=0, out_res=0, bound_management="none"))):
        for name, device in (("cpu", torch.device("cpu")), ("cuda", dev)):
            arr = TileArray(64, 128, CrossbarConfig(forward=io), device=device, seed=3)
            arr.program(w.to(device))
            w_dev = arr.read().cpu()          # programmed weights (clipped by this device's own sampled bounds)
            err = (arr.forward(x.to(device)).cpu() - x @ w_dev.T)
            stats[f"{cfg_name}_{name}_mean"] = err.mean().item()
            stats[f"{cfg_name}_{name}_std"] = err.std().item()
            stats[f"{cfg_name}_{name}_passes"] = int(arr.counters["forward_passes"])
    for cfg_name in ("default", "no_bm", "noise_only"):
        assert abs(stats[f"{cfg_name}_cpu_std"] / stats[f"{cfg_name}_cuda_std"] - 1) < 0.03, stats
        assert abs(stats[f"{cfg_name}_cpu_mean"] - stats[f"{cfg_name}_cuda_mean"]) < 0.01, stats
    return stats


def check_moves_and_state(dev: torch.device) -> str:
    model = nn.Sequential(AnalogLinear(20, 8, seed=0), nn.ReLU(), AnalogLinear(8, 3, seed=1)).to(dev)
    opt = AnalogSGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 20, device=dev)
    y = torch.randint(0, 3, (16,), device=dev)
    w0 = model[0].get_weights()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert model[0].tile.generator.device.type == "cuda"
    assert not torch.equal(model[0].get_weights(), w0)
    cpu_model = nn.Sequential(AnalogLinear(20, 8, seed=9), nn.ReLU(), AnalogLinear(8, 3, seed=9))
    cpu_model.load_state_dict({k: v.cpu() if torch.is_tensor(v) else v for k, v in model.state_dict().items()})
    assert torch.equal(cpu_model[0].get_weights(), model[0].get_weights().cpu())
    cpu_model(x.cpu())
    # moved to the GPU between backward and step: the CPU stash follows the layer (as .grad follows a parameter),
    # the exact update equals SGD's W - lr·gᵀx computed on the host
    ideal = CrossbarConfig.perfect(device=IdealDevice(), update=UpdateParameters(pulse_type="none"))
    lin = AnalogLinear(20, 8, bias=False, rpu_config=ideal, seed=0)
    xs, gs = torch.randn(16, 20), torch.randn(16, 8)
    w_cpu = lin.get_weights()
    lin(xs).backward(gs)
    lin.to(dev)
    AnalogSGD(lin.parameters(), lr=0.1).step()
    torch.testing.assert_close(lin.get_weights().cpu(), w_cpu - 0.1 * gs.T @ xs, rtol=1e-5, atol=1e-5)
    return "ok"


def check_float64(dev: torch.device) -> str:
    lin = AnalogLinear(30, 5, device=dev, dtype=torch.float64, seed=0)
    out = lin(torch.randn(4, 30, device=dev, dtype=torch.float64))
    out.sum().backward()
    AnalogSGD(lin.parameters(), lr=0.1).step()
    assert out.dtype == torch.float64
    return "ok"


def check_half_and_saved_states(dev: torch.device) -> str:
    """The checks of the thirty-first session on the device: (a) float16 and bfloat16 tile arrays of the default
    config are sampled (the 2^31-pulse check of the steps runs in float32 at least), give finite outputs and an
    update moves them; (b) a layer's state whose generator state is unreadable is refused before anything is
    copied (``TileArray._check_saved_state`` tries it on a generator of the layer's device), and a good state
    loads with the same weights and the same next draws."""
    for dtype in (torch.float16, torch.bfloat16):
        arr = TileArray(24, 40, CrossbarConfig(), device=dev, dtype=dtype, seed=0)
        arr.program(torch.rand(24, 40, device=dev, dtype=dtype) * 0.2 - 0.1)
        x = torch.randn(8, 40, device=dev, dtype=dtype)
        w0 = arr.read(hidden=True).clone()
        assert torch.isfinite(arr.forward(x).float()).all(), dtype
        arr.update(x, torch.randn(8, 24, device=dev, dtype=dtype) * 0.1, 0.5)
        assert not torch.equal(arr.read(hidden=True), w0), dtype
    src = AnalogLinear(20, 8, device=dev, seed=0)
    src(torch.randn(4, 20, device=dev)).sum().backward()
    AnalogSGD(src.parameters(), lr=0.1).step()
    dst = AnalogLinear(20, 8, device=dev, seed=5)
    before = {k: v.clone() for k, v in dst.state_dict().items() if torch.is_tensor(v)}
    broken = src.state_dict()
    broken["tile._extra_state"] = {**broken["tile._extra_state"], "generator_state": torch.zeros(3)}
    try:
        dst.load_state_dict(broken)
        raise AssertionError("an unreadable generator state was loaded")
    except ValueError as err:
        assert "'generator_state' entry must be" in str(err), err
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in before.items()), "half-loaded after a refusal"
    dst.load_state_dict(src.state_dict())
    assert torch.equal(dst.get_weights(), src.get_weights())
    x = torch.randn(4, 20, device=dev)
    assert torch.equal(dst(x), src(x)), "the loaded generator does not continue the saved stream"
    return "ok"

def check_bf16_counts(dev: torch.device) -> dict[str, object]:
    """Same seed, counts with bfloat16 operands and with float32 ones: equal in every device; median times. The
    bfloat16 count is forced here for short trains too (``COUNT_BF16_MIN_SLOTS`` lowered to 1); ``by_default``
    says whether training takes it for that case."""
    import statistics
    import time

    import crossbar.update as upd
    cases = {  # name: (batch, R, C, rows, cols, inputs non-negative)
        "mlp 784-256 b64": (64, 1, 4, 256, 196, False),
        "mlp 784-256 b256": (256, 1, 4, 256, 196, False),
        "mlp 784-256 b1024": (1024, 1, 4, 256, 196, False),
        "cnn conv2 256ch b64 (64x196 positions)": (64 * 196, 1, 9, 256, 256, True),
        "one row, 3x2 tiles": (32, 3, 2, 1, 100, False),
        "tile 1024 b256": (256, 1, 1, 1024, 1024, False)}
    out: dict[str, object] = {}
    min_slots = upd.COUNT_BF16_MIN_SLOTS
    upd.COUNT_BF16_MIN_SLOTS = 1
    try:
        for name, (batch, n_r, n_c, rows, cols, relu) in cases.items():
            g = torch.Generator(device=dev).manual_seed(0)
            x = torch.randn(batch, n_c, cols, device=dev, generator=g)
            x = x.clamp_min(0) if relu else x
            d = torch.randn(batch, n_r, rows, device=dev, generator=g) * 0.01
            res, times = {}, {}
            for bf16 in (False, True):
                upd.count_bf16 = bf16
                res[bf16] = upd.pulse_counts(x, d, 0.1, 0.001, upd.UpdateParameters(),
                                             torch.Generator(device=dev).manual_seed(1))
                ts = []
                for _ in range(5):
                    torch.cuda.synchronize()
                    t = time.perf_counter()
                    upd.pulse_counts(x, d, 0.1, 0.001, upd.UpdateParameters(), g)
                    torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t)
                times[bf16] = statistics.median(ts)
            same = all(torch.equal(a, b) for a, b in zip(res[False], res[True]))
            k_len = batch * upd.UpdateParameters().desired_bl
            out[name] = {"equal": same, "pulses": float(res[True][2]), "float32_ms": times[False] * 1e3,
                         "bf16_ms": times[True] * 1e3, "speedup": times[False] / times[True],
                         "by_default": min_slots <= k_len <= upd.COUNT_BF16_MAX_SLOTS}
            assert same, f"{name}: bfloat16 counts differ from the float32 counts"
    finally:
        upd.count_bf16 = True
        upd.COUNT_BF16_MIN_SLOTS = min_slots
    return out


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line options, parsed by :func:`main` (a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    ap = SuggestingArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    return ap


def main() -> int:
    args = build_parser().parse_args()
    dev = torch.device("cuda")
    report: dict[str, object] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(dev)}
    failed = False
    for name, fn in (("sync_free", check_sync_free), ("noise_free", check_noise_free_cpu_equals_gpu),
                     ("determinism", check_determinism),
                     ("cpu_gpu_statistics", check_cpu_gpu_statistics), ("moves_and_state", check_moves_and_state),
                     ("float64", check_float64), ("half_and_saved_states", check_half_and_saved_states),
                     ("bf16_counts", check_bf16_counts)):
        try:
            report[name] = fn(dev)
            if isinstance(report[name], dict) and any(str(v).startswith("SYNC") for v in report[name].values()):
                failed = True
        except Exception:  # noqa: BLE001 - report every failing check
            report[name] = "FAILED: " + traceback.format_exc(limit=6)
            failed = True
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
