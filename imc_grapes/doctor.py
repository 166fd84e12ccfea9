"""``imc-grapes doctor``: a self-check of the installation.

Checks, each printed as OK / FAIL / SKIP with an explanation:

* torch: imports, version;
* engine: this project's crossbar engine runs a forward, backward and pulsed update on the CPU (and says whether
  its pulse counts use int8 or float matmuls on this CPU, ``crossbar.CPU_PULSE_COUNTS``);
* aihwkit: imports and its compiled C++ tiles (a pulsed ConstantStep tile) run a forward, backward and update —
  the check that catches a torch/aihwkit ABI mismatch (see docs/install.md);
* cuda: if a GPU is visible, a matmul and the engine on it;
* fusion: with ``IMC_GRAPES_COMPILE=auto|on``, the compiled device model agrees with the eager one (optional).

Exits 1 when a required check fails (torch, engine, and aihwkit unless ``--skip-aihwkit``, which skips the aihwkit
check altogether: aihwkit is then neither imported nor run, e.g. where importing it would crash the process).
"""
from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    status: str  # "OK", "FAIL", "SKIP"
    detail: str
    required: bool


def _check_torch() -> str:
    import torch

    x = torch.randn(8, 8)
    if not torch.allclose(x @ torch.eye(8), x):
        raise RuntimeError("torch matmul gives wrong results")
    return f"torch {torch.__version__}"


def _engine_roundtrip(device: str) -> str:
    import torch

    from crossbar import AnalogLinear, CrossbarConfig
    from devices import ConstantStepDevice

    layer = AnalogLinear(16, 8, bias=False, rpu_config=CrossbarConfig(device=ConstantStepDevice()),
                         device=device, seed=0)
    w0 = layer.get_weights().clone()
    x = torch.randn(4, 16, device=device, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    from crossbar import AnalogSGD

    AnalogSGD(layer.parameters(), lr=0.1).step()
    changed = (layer.get_weights() - w0).abs().sum()
    if not torch.isfinite(y).all() or x.grad is None or float(changed) == 0.0:
        raise RuntimeError("engine forward/backward/update did not produce a finite output, a gradient and a "
                           "weight change")
    return f"forward, backward and pulsed update ran on {device}"


def _check_engine() -> str:
    from crossbar import CPU_PULSE_COUNTS

    return f"{_engine_roundtrip('cpu')}; its CPU pulse counts use {CPU_PULSE_COUNTS}"


def _check_aihwkit() -> str:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import aihwkit
        import torch
        from aihwkit.nn import AnalogLinear
        from aihwkit.optim import AnalogSGD
        from aihwkit.simulator.configs import SingleRPUConfig
        from aihwkit.simulator.configs.devices import ConstantStepDevice
    except Exception as exc:  # ImportError, undefined-symbol OSError, ...
        raise RuntimeError(f"aihwkit does not import ({type(exc).__name__}: {exc}). It needs the torch it was "
                           "built against: torch==2.10.0 with the aihwkit 1.1.0 wheel (pip install -e .)") from exc
    layer = AnalogLinear(16, 8, bias=False, rpu_config=SingleRPUConfig(device=ConstantStepDevice()))
    w0 = layer.get_weights()[0].clone()
    x = torch.randn(4, 16)
    try:
        y = layer(x)
        y.sum().backward()
        AnalogSGD(layer.parameters(), lr=0.1).step()
    except RuntimeError as exc:
        raise RuntimeError(f"aihwkit {aihwkit.__version__} imports but its C++ tiles fail ({exc}); this is the "
                           f"torch/aihwkit ABI mismatch (torch {torch.__version__}); reinstall with "
                           "torch==2.10.0 and aihwkit==1.1.0") from exc
    if float((layer.get_weights()[0] - w0).abs().sum()) == 0.0:
        raise RuntimeError("aihwkit's pulsed update changed no weight")
    return f"aihwkit {aihwkit.__version__}: C++ ConstantStep tile forward/backward/update OK"


def _check_cuda() -> str:
    import torch

    if not torch.cuda.is_available():
        raise _Skip("no CUDA device visible")
    x = torch.randn(64, 64, device="cuda")
    torch.testing.assert_close((x @ torch.eye(64, device="cuda")).cpu(), x.cpu())
    return f"{torch.cuda.get_device_name(0)}: matmul OK; engine: {_engine_roundtrip('cuda')}"


def _check_fusion() -> str:
    import time

    import torch

    from devices import get_preset
    from devices.fusion import COMPILE_MODES, get_compile, set_compile

    mode = get_compile()
    if mode == "off":
        raise _Skip("IMC_GRAPES_COMPILE=off (the default): the device models run eagerly; set it to auto or on to "
                    "fuse them with torch.compile (faster long analog runs)")
    if mode not in COMPILE_MODES:          # "off (compile failed: …)": an earlier auto attempt in this process
        raise RuntimeError(f"device models: {mode}")
    dev = get_preset("ReRamSB")
    g = torch.Generator().manual_seed(0)
    p = dev.sample((4096,), g)
    w = dev.clip(torch.rand(4096, generator=g) - 0.5, p)
    n_up = torch.randint(0, 5, (4096,), generator=g).float()
    n_down = torch.randint(0, 5, (4096,), generator=g).float()
    set_compile("on")
    try:
        start = time.perf_counter()
        mean, var = dev.pulse_moments(w, n_up, n_down, p)
        took = time.perf_counter() - start
    finally:
        set_compile(mode)
    set_compile("off")
    try:
        mean0, var0 = dev.pulse_moments(w, n_up, n_down, p)
    finally:
        set_compile(mode)
    if not (torch.allclose(mean, mean0, rtol=0, atol=1e-3 * dev.dw_min + 1e-6)
            and torch.allclose(var, var0, rtol=1e-4, atol=1e-12)):
        raise RuntimeError("the compiled device model disagrees with the eager one; set IMC_GRAPES_COMPILE=off")
    return f"IMC_GRAPES_COMPILE={mode}: device models compiled in {took:.1f} s, match the eager ones"


class _Skip(Exception):
    pass


def _skipped_aihwkit() -> str:
    raise _Skip("skipped (--skip-aihwkit): aihwkit was not imported or checked")


def run_checks(skip_aihwkit: bool = False) -> list[Check]:
    """Run every check in turn; with ``skip_aihwkit`` the aihwkit check is reported as SKIP without importing
    aihwkit."""
    checks: list[tuple[str, Callable[[], str], bool]] = [
        ("torch", _check_torch, True),
        ("engine", _check_engine, True),
        ("aihwkit", _skipped_aihwkit if skip_aihwkit else _check_aihwkit, not skip_aihwkit),
        ("cuda", _check_cuda, False),
        ("fusion", _check_fusion, False),
    ]
    out = []
    for name, fn, required in checks:
        try:
            out.append(Check(name, "OK", fn(), required))
        except _Skip as exc:
            out.append(Check(name, "SKIP", str(exc), required))
        except Exception as exc:  # report, never crash the doctor
            detail = str(exc) or traceback.format_exc(limit=2)
            out.append(Check(name, "FAIL", detail, required))
    return out


def main(skip_aihwkit: bool = False) -> int:
    from .versions import versions

    for k, v in versions().items():
        print(f"{k:>15}: {v}")
    print()
    failed_required = False
    for c in run_checks(skip_aihwkit):
        tag = c.status if c.required or c.status != "FAIL" else "WARN"
        print(f"[{tag:>4}] {c.name:<8} {c.detail}")
        failed_required |= c.required and c.status == "FAIL"
    if failed_required:
        print("\nA required part is broken (see FAIL above). Reinstall with `bash scripts/install.sh` "
              "(torch 2.10.0 + aihwkit 1.1.0), or pass --skip-aihwkit on machines where aihwkit cannot load.")
        return 1
    print("\nAll required parts work.")
    return 0
