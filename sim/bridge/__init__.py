"""The simulation bridge: the accelerator behind its link (:class:`hw.top.LinkedAccelerator`),
built by Verilator with a small C++ harness (``harness.cpp``) that serves the link on a TCP port
or a pty at the configured line rate, in simulated time. The host runtime connects to it with the
same ``serial_for_url`` it uses for a board.

With ``pins=True`` the design is the board's :class:`hw.top.SerialAccelerator` (UART PHY +
link + accelerator) and the harness plays the host's USB-serial adapter bit by bit on its rx/tx
pins, at ``clk_hz / baud`` cycles per bit (optionally with the adapter's clock ``host_skew``
off), so the gateware a board runs is what the test exercises.

    with Bridge(program.cfg, program.sizes()) as bridge:
        dev = Device.open(bridge.url)

Builds are cached per design under ``build/sim/bridge_<hash>`` (or ``$DYAD_SIM_DIR``).
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from gen.boards import BOARDS, board_link
from hw.link import LinkParams
from hw.scratchpad import Sizes
from hw.top import LinkedAccelerator, SerialAccelerator

from ..runner import (
    VERILATOR_ARGS,
    build_dir_for,
    make_overrides,
    verilator_bin,
    write_if_changed,
)

__all__ = ["Bridge", "build_bridge", "BridgeError", "BRIDGE_LINK", "PINS_LINK"]

HARNESS = Path(__file__).with_name("harness.cpp")
TOP = "dyad_top"
CXX_OPT = "-O1"
# the link the tests simulate: 12.5 Mbaud at a nominal 50 MHz (40 cycles per byte, the cost of
# moving bytes in simulated time; bench/bench_link.py measures at 3 Mbaud); a frame that stops
# for 400 us (500 byte times) is dropped
BRIDGE_LINK = LinkParams(buffer=1024, clk_hz=50_000_000, baud=12_500_000, timeout_us=400)


# the pin-level bridge runs the link a ULX3S build runs: 3 Mbaud from its core clock (23.33
# cycles per bit at 70 MHz: the fractional baud generator at work)
PINS_LINK = board_link(BOARDS["ulx3s-85f"])


class BridgeError(RuntimeError):
    pass


def build_bridge(cfg, sizes: Sizes, link: LinkParams = BRIDGE_LINK, *, pins: bool = False,
                 log=sys.stderr) -> Path:
    """The bridge executable for this design (built unless cached); ``pins``: the UART top."""
    from amaranth.back import verilog

    bindir = verilator_bin()
    build_dir = build_dir_for("bridge_pins" if pins else "bridge",
                              {"cfg": cfg.to_dict(), "sizes": repr(sizes), "link": repr(link),
                               "opt": CXX_OPT})
    exe = build_dir / "obj" / "bridge"
    vfile = build_dir / f"{TOP}.v"
    design = (SerialAccelerator if pins else LinkedAccelerator)(cfg, sizes, link)
    changed = write_if_changed(vfile, verilog.convert(design, name=TOP))
    harness = build_dir / "harness.cpp"
    changed |= write_if_changed(harness, HARNESS.read_text())
    if exe.exists() and not changed:
        return exe
    print(f"building the simulation bridge in {build_dir} (Verilator + C++, a few minutes)...",
          file=log, flush=True)
    t0 = time.monotonic()
    cmd = [str(bindir / "verilator"), "--cc", "--exe", "--build", "-j", "2", *VERILATOR_ARGS,
           "--top-module", TOP, "--Mdir", "obj", "-o", "bridge",
           *(["-CFLAGS", "-DPINS"] if pins else []),
           "-MAKEFLAGS", make_overrides(CXX_OPT), vfile.name, harness.name]
    env = {k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}
    with open(build_dir / "build.log", "w") as f:
        proc = subprocess.run(cmd, cwd=build_dir, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode or not exe.exists():
        tail = (build_dir / "build.log").read_text().splitlines()[-15:]
        raise BridgeError("bridge build failed:\n" + "\n".join(tail))
    print(f"built the bridge in {time.monotonic() - t0:.0f} s", file=log, flush=True)
    return exe


class Bridge:
    """A running bridge; ``url`` is what the host opens. ``pty``: serve a pty instead of a
    TCP port; ``pins``: drive the UART top's pins (``host_skew``: the adapter's clock error,
    e.g. 0.01 for a bit period 1 % long)."""

    def __init__(self, cfg, sizes: Sizes, link: LinkParams = BRIDGE_LINK, *, pty: bool = False,
                 pins: bool = False, host_skew: float = 0.0):
        self.cfg, self.sizes, self.link = cfg, sizes, link
        self.pty, self.pins, self.host_skew = pty, pins, host_skew
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> "Bridge":
        exe = build_bridge(self.cfg, self.sizes, self.link, pins=self.pins)
        pace = (["--cycles-per-bit", repr(self.link.clk_hz / self.link.baud),
                 "--host-skew", repr(self.host_skew)] if self.pins
                else ["--cycles-per-byte", repr(self.link.cycles_per_byte)])
        cmd = [str(exe), *(["--pty"] if self.pty else ["--tcp", "0"]), *pace]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("LISTEN "):
            self.stop()
            raise BridgeError(f"the bridge did not start: {line or 'no answer in 30 s'}")
        self.url = line.split(" ", 1)[1]
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
