"""Run a compiled program on the Verilator-simulated accelerator (``sim/bench_core.py``) from
plain Python: write the job, build (cached per configuration and memory sizes), run, return the
bench's summary (per-inference performance counters, simulator speed)."""
from __future__ import annotations

import json
import pickle

from hw.top import Accelerator

from .runner import BenchFailed, build_dir_for, run_cocotb

__all__ = ["run_on_core", "CXX_OPT"]

# Built with only the top level public (the bench drives ports only) and -O1: ~100 000 simulated
# cycles/s for 8x8, against ~1 600 with every signal public at -O0 (and an -O1 build of the
# all-public model took over 11 minutes for one C++ file)
CXX_OPT = "-O1"


def run_on_core(program, inputs, expected, traces=None, *, tag: str = "",
                segmented: bool = False) -> dict:
    """Each of ``inputs`` through ``program`` on the simulated accelerator; raises
    :class:`sim.runner.BenchFailed` (naming the first differing tensor when ``traces`` are given)
    unless every output equals ``expected``. ``segmented``: one RUN per layer (per-layer
    cycles in the result)."""
    sizes = program.sizes()
    build_dir = build_dir_for("core", {"cfg": program.cfg.to_dict(), "sizes": repr(sizes),
                                       "opt": CXX_OPT, "ports_only": True})
    build_dir.mkdir(parents=True, exist_ok=True)
    job = build_dir / f"job{tag}.pkl"
    with open(job, "wb") as f:
        pickle.dump({"program": program, "inputs": list(inputs), "expected": list(expected),
                     "traces": traces, "segmented": segmented}, f)
    result = build_dir / f"job{tag}.pkl.result.json"
    result.unlink(missing_ok=True)
    try:
        run_cocotb(Accelerator(program.cfg, sizes), "accel", "sim.bench_core", build_dir,
                   env={"DYAD_CORE_JOB": str(job)}, cxx_opt=CXX_OPT, ports_only=True)
    except BenchFailed as exc:
        if result.exists():         # the bench's own verdict: which image, which tensor
            raise BenchFailed("; ".join(json.loads(result.read_text())["failures"])) from exc
        raise
    return json.loads(result.read_text())
