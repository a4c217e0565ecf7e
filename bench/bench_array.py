"""Benchmark of the systolic array (issue figures): for 8x8 and 16x16 int8 on ECP5-85F, the LUT /
FF / DSP / BRAM use and post-route Fmax from yosys + nextpnr, and the utilisation measured in
Verilator simulation for M = N = K GEMMs (useful MAC cycles / (cycles x PEs), first beat in to last
row out).

    python bench/bench_array.py [--arrays 8x8,16x16] [--pe mac,fip] [--sizes 64,128,256] [--no-pnr]
                                [--seeds 3]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gen import build as gen_build  # noqa: E402
from gen import report  # noqa: E402
from hw.config import AcceleratorConfig  # noqa: E402
from hw.systolic import SystolicArray  # noqa: E402
from sim.runner import build_dir_for, run_cocotb  # noqa: E402


def utilisation(cfg: AcceleratorConfig, sizes: list[int]) -> dict[int, tuple[int, float]]:
    """Run the bench's utilisation test in a child process (cocotb owns the simulator process's
    stdout) and parse its ``UTIL`` lines: ``{size: (cycles, utilisation)}``."""
    import os

    env = {**os.environ, "DYAD_CONFIG": cfg.to_json(), "DYAD_UTIL_SIZES": ",".join(map(str, sizes))}
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.run([sys.executable, "-c", "from bench.bench_array import _run; _run()"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if proc.returncode:
        raise RuntimeError(f"utilisation run failed:\n{text[-2000:]}")
    return {int(m[1]): (int(m[2]), float(m[3])) for m in re.finditer(
        r"UTIL array=\S+ size=(\d+) cycles=(\d+) ideal=\d+ util=([\d.]+)", text)}


def _run():
    import json
    import os
    cfg = AcceleratorConfig.from_dict(json.loads(os.environ["DYAD_CONFIG"]))
    run_cocotb(SystolicArray(cfg), "systolic", "sim.bench_systolic",
               build_dir_for("systolic", cfg.to_dict()),
               env={k: os.environ[k] for k in ("DYAD_CONFIG", "DYAD_UTIL_SIZES")},
               testcase="utilisation")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", default="8x8,16x16")
    ap.add_argument("--pe", default="mac", help="processing elements, comma-separated: mac, fip")
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--device", default="ecp5-85f")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--no-pnr", action="store_true")
    ap.add_argument("--no-util", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for arr, pe in [(a, p) for a in args.arrays.split(",") for p in args.pe.split(",")]:
        r, c = map(int, arr.split("x"))
        cfg = AcceleratorConfig(rows=r, cols=c, kmax=max(sizes + [4096]), device=args.device,
                                pe=pe)
        print(gen_build.summary(cfg), flush=True)
        util = {}
        if not args.no_util:
            t = time.perf_counter()
            util = utilisation(cfg.replace(kmax=max(sizes)), sizes)
            print(f"  utilisation simulated in {time.perf_counter() - t:.0f} s", flush=True)
        rep = None
        if not args.no_pnr:
            out = ROOT / "build" / "bench" / cfg.name
            doc = gen_build.build(cfg, out)
            rep = report.main_report(cfg, out, doc, seeds=args.seeds, units=["systolic"])[0]
        rows.append((f"{arr} {pe}", rep, util))
    print()
    print(f"{'array':10s} {'LUT':>7s} {'FF':>7s} {'DSP':>5s} {'BRAM':>5s} {'Fmax':>7s}  "
          + "  ".join(f"util K={s:<4d}" for s in sizes))
    for arr, rep, util in rows:
        syn = (f"{rep.luts:7d} {rep.ffs:7d} {rep.dsps:5d} {rep.brams:5d} {rep.fmax_mhz:7.1f}"
               if rep else f"{'-':>7s} {'-':>7s} {'-':>5s} {'-':>5s} {'-':>7s}")
        us = "  ".join(f"{100 * util[s][1]:10.2f}%" if s in util else f"{'-':>11s}" for s in sizes)
        print(f"{arr:10s} {syn}  {us}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
