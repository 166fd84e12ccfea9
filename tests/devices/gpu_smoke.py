"""GPU smoke check for devices/ (not collected by pytest): run ``python tests/devices/gpu_smoke.py`` on a CUDA machine.

Checks, per model and preset: sampling on CUDA (which reads the host once, at build time: the sampled-parameter
checks), then clip, apply_pulses and pulse_moments without any host synchronisation
(``torch.cuda.set_sync_debug_mode("error")``), outputs on the GPU, finite and within bounds; the CUDA moments equal
the CPU moments for the same parameters (float32, rtol 1e-4); and prints the time per call for 8×256×256 devices.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import devices as dv  # noqa: E402


def main() -> int:
    print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
    cuda = torch.device("cuda")
    models = [dv.ConstantStepDevice(), dv.LinearStepDevice(gamma_up=0.5, gamma_down=0.3), dv.SoftBoundsDevice(),
              dv.PowStepDevice(pow_gamma=1.5), dv.ExpStepDevice()] + [dv.get_preset(n) for n in dv.PRESETS]
    shape = (8, 256, 256)
    failures = 0
    for dev in models:
        g = torch.Generator(device=cuda).manual_seed(0)
        p = dev.sample(shape, g, device=cuda)  # build time: one deliberate host read (the sampled-parameter checks)
        torch.cuda.set_sync_debug_mode("error")
        try:
            w = dev.clip(torch.zeros(shape, device=cuda), p)
            nu = torch.randint(0, 20, shape, device=cuda, generator=g)
            nd = (torch.randint(0, 20, shape, device=cuda, generator=g)
                  * (torch.rand(shape, device=cuda, generator=g) < 0.5))
            out = dev.apply_pulses(w, nu, nd, p, g)
            m, v = dev.pulse_moments(w, nu.float(), nd.float(), p)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        ok = out.is_cuda and bool(torch.isfinite(out).all()) and bool(((out >= p.w_min) & (out <= p.w_max)).all())
        pc = p.to(device="cpu")
        mc, vc = dev.pulse_moments(w.cpu(), nu.float().cpu(), nd.float().cpu(), pc)
        scale = (m.cpu() - w.cpu()).abs().max().item() + 1e-12
        dm = ((m.cpu() - mc).abs().max().item()) / scale
        dsd = ((v.cpu().sqrt() - vc.sqrt()).abs().max().item()) / (vc.sqrt().max().item() + 1e-12)
        ok = ok and dm < 1e-4 and dsd < 1e-4
        times = []
        for _ in range(10):
            torch.cuda.synchronize()
            t = time.perf_counter()
            dev.apply_pulses(w, nu, nd, p, g)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        print(f"{type(dev).__name__:26s} ok={ok} rel|Δmean| cuda-cpu={dm:.1e} rel|Δstd|={dsd:.1e} "
              f"{statistics.median(times) * 1e3:.2f} ms / call ({w.numel()} devices)")
        failures += not ok
    print("FAILURES", failures)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
