"""Dense vs sparse CPU device update: the measurement behind ``PulsedDevice.SPARSE_PULSES_PER_DEVICE`` (a script).

For each preset and fraction of devices with pulses, one call of the device update on ``--devices`` devices
(784x256 by default), timed two ways: *dense* (``_pulsed_states`` on every device, what GPUs and large pulse
counts use) and *sparse* (``apply_pulses_at_``: gather the pulsed devices, update them, scatter back). Printed:
median ms of each and dense / sparse. Pulse counts: 1-3 up pulses and 0-1 down pulses on each pulsed device::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_device_update.py [--presets ReRamSB,Idealized] [--fractions 0.2,0.8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fusion import _median_ms  # noqa: E402  (same folder: the per-call timing of the fusion benchmark)
from devices import get_preset  # noqa: E402
from imc_grapes.runtime import tune_malloc  # noqa: E402
from imc_grapes.suggest import SuggestingArgumentParser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The script's command-line options, parsed by :func:`main` (a function of its own so that
    tests/test_docs_commands.py can check the documented command lines without running anything)."""
    ap = SuggestingArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="ReRamSB,EcRam,Capacitor,Idealized", help="comma-separated device presets")
    ap.add_argument("--fractions", default="0.1,0.3,0.6,0.95", help="fractions of devices with pulses")
    ap.add_argument("--devices", type=int, default=200704, help="devices per call (784x256 = 200704)")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    return ap


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"bench_device_update: {args.devices} devices, {args.threads} thread(s), malloc {tune_malloc()}")
    print(f"{'preset':10s} {'pulsed':>7s} {'pulses/dev':>10s} {'dense ms':>9s} {'sparse ms':>10s} "
          f"{'dense/sparse':>13s}")
    rows = []
    for name in args.presets.split(","):
        dev = get_preset(name)
        g = torch.Generator().manual_seed(0)
        n = args.devices
        p = dev.sample((n,), g)
        w0 = dev.clip(0.6 * torch.rand(n, generator=g) - 0.3, p)
        for frac in (float(f) for f in args.fractions.split(",")):
            on = torch.rand(n, generator=g) < frac
            n_up = torch.randint(1, 4, (n,), generator=g).float() * on
            n_down = torch.randint(0, 2, (n,), generator=g).float() * on
            index = on.nonzero().squeeze(1)
            w = w0.clone()
            dense = _median_ms(lambda: dev._pulsed_states(w, n_up, n_down, p, g, out=w), args.repeats)
            w = w0.clone()
            sparse = _median_ms(lambda: dev.apply_pulses_at_(w, index, n_up[index], n_down[index], p, g),
                                args.repeats)
            per_dev = float((n_up + n_down).sum()) / n
            rows.append({"preset": name, "pulsed": frac, "pulses_per_device": per_dev, "dense_ms": dense,
                         "sparse_ms": sparse})
            print(f"{name:10s} {frac:7.2f} {per_dev:10.2f} {dense:9.2f} {sparse:10.2f} {dense / sparse:13.2f}",
                  flush=True)
    return rows


if __name__ == "__main__":
    main()
