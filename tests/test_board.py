"""Boards: the UART top at the pin level (Verilator bridge driving rx/tx bit by bit at 3 Mbaud
from the ULX3S core clock), the board flow's fit checks, and one quick synthesis of a small board
build. Bitstreams themselves (place and route: hours on 2 cores) are opt-in: ``-m board``."""
from __future__ import annotations

import random

import numpy as np
import pytest

from gen.__main__ import main as gen_main
from gen.boards import BOARDS, _platform, board_link, build_board, estimate, make_pll
from gen.compiler import compile_model, read_command, write_command
from gen.report import ToolError
from gen.workloads import digits_vit
from host.__main__ import SIM_DEFAULT
from host.__main__ import main as host_main
from host.device import Device
from hw.config import AcceleratorConfig, ConfigError
from hw.isa import Target
from hw.scratchpad import spad_layout
from sim.bridge import PINS_LINK, Bridge

CFG = SIM_DEFAULT


def test_pins_bridge_digits(capsys):
    """The same end-to-end run as the stream-level bridge, through the ULX3S build's UART top
    and configuration: ``python -m host run --sim --pins --preset ulx3s-8x8``, 20 digits
    images, every output bit-exact."""
    rc = host_main(["run", "--sim", "--pins", "--preset", "ulx3s-8x8", "--images", "20"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    assert "UART pins, 3000000 baud from 70 MHz" in out
    assert "20/20 outputs bit-exact vs gen.golden" in out


@pytest.mark.parametrize("skew", [-0.02, 0.02])
def test_pins_host_clock_off_by_two_percent(skew):
    """A USB-serial adapter whose clock is 2 % off either way: a 2 KiB scratchpad write and
    read-back and repeated HELLO/STATUS still go through without a retry."""
    im, _ = digits_vit(CFG, 1)
    prog = compile_model(im, CFG)
    rnd = random.Random(7)
    spad = spad_layout(CFG)
    values = [[rnd.randrange(-1 << 15, 1 << 15) for _ in range(CFG.cols)] for _ in range(128)]
    with Bridge(CFG, prog.sizes(), PINS_LINK, pins=True, host_skew=skew) as bridge:
        dev = Device.open(bridge.url, timeout=2.0)
        try:
            for _ in range(3):
                assert dev.hello()["rows"] == CFG.rows
                assert dev.status()["uptime"] > 0
            dev.attach(prog)
            dev._transfer(write_command(Target.SPAD, spad, 16, values))
            words = dev._transfer(read_command(Target.SPAD, 16, len(values)))
            back = np.array(words, dtype=np.uint32).view(np.int16).reshape(len(values),
                                                                           CFG.cols)
            assert back.tolist() == values
            assert dev.link.stats.retries == 0
        finally:
            dev.close()


# ---- the board flow: fit checks (no place and route) ------------------------------------------

def _gen_error(capsys, *argv) -> str:
    assert gen_main(["build", *argv]) == 2
    return capsys.readouterr().err.strip()


def test_board_refusals(capsys):
    err = _gen_error(capsys, "--board", "ulx3s-85f", "--array", "16x16")
    assert "does not fit ulx3s-85f (ecp5-85f)" in err and "LUT ~" in err and "of 83640" in err
    err = _gen_error(capsys, "--board", "icebreaker")
    assert "does not fit icebreaker (ice40-up5k)" in err
    assert all(f" of {n}" in err for n in (5280, 8, 30))          # LUT, DSP, BRAM available
    err = _gen_error(capsys, "--board", "ulx3s-85f", "--clock-mhz", "15")
    assert "cycles per bit; the UART needs at least 6" in err
    assert "unknown; known: ulx3s-25f" in _gen_error(capsys, "--board", "nope")
    assert "conflicts with --board ulx3s-85f" in _gen_error(capsys, "--board", "ulx3s-85f",
                                                            "--device", "ecp5-25f")


def test_board_link_rates():
    link = board_link(BOARDS["ulx3s-85f"])
    assert (link.clk_hz, link.baud) == (70_000_000, 3_000_000) and link == PINS_LINK
    with pytest.raises(ConfigError, match="cycles per bit"):
        board_link(BOARDS["icebreaker"], 12_000_000)


@pytest.mark.parametrize("board, ports", [("ulx3s-85f", ("clkin", "clkout0", "EHXPLLL")),
                                          ("icebreaker", ("clock_in", "clock_out",
                                                          "SB_PLL40_CORE"))])
def test_pll_from_the_calculators(board, ports, tmp_path):
    b = BOARDS[board]
    pll, hz = make_pll(b, _platform(b), b.core_hz, tmp_path)
    assert hz == b.core_hz and (pll.clk_in, pll.clk_out) == ports[:2]
    assert ports[2] in pll.verilog and f"module {pll.module}" in pll.verilog
    with pytest.raises(ToolError, match="could not make 900 MHz"):
        make_pll(b, _platform(b), 900_000_000, tmp_path)


def test_board_synthesis_smoke(tmp_path):
    """A small board build through synthesis: the PLL from ecppll, the amaranth-boards pins, the
    yosys cell counts within the device and the estimate's DSP/BRAM bounds honoured."""
    cfg = AcceleratorConfig(rows=2, cols=2, kmax=1024, row_units=1, max_row=64,
                            max_channels=64)
    im, _ = digits_vit(cfg, 1)
    prog = compile_model(im, cfg)
    board = BOARDS["ulx3s-85f"]
    report = build_board(board, cfg, prog, tmp_path, synth_only=True, log=print)
    used = report["synthesis"]
    need = estimate(cfg, prog.sizes(), board_link(board))
    print(report)
    assert report["core_hz"] == 70_000_000 and report["pll"]["in_hz"] == 25_000_000
    assert 0 < used["dsp"] <= need["dsp"] and used["lut"] >= need["lut"]
    assert 0 < used["bram"] <= need["bram"]
    stat = next(tmp_path.glob("*.stat.txt")).read_text()
    assert "EHXPLLL" in stat and "TRELLIS_IO" in stat


@pytest.mark.board
@pytest.mark.parametrize("board,extra", [("ulx3s-85f", ["--array", "2x2"]),    # ~8 min
                                         ("ulx3s-85f", [])])                  # ~10 min
def test_board_bitstream(board, extra, tmp_path):
    """Opt-in (``-m board``): a bitstream that meets the board's core clock (a build that misses
    it exits non-zero and keeps only ``*.timing-failed``)."""
    assert gen_main(["build", "--board", board, *extra, "--out", str(tmp_path)]) == 0
    assert list(tmp_path.glob("*.bit")) or list(tmp_path.glob("*.bin"))
