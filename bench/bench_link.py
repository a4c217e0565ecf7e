"""Host link throughput through the simulation bridge, in the device's own clock: effective
host->device and device->host data bytes/s against the configured line rate, and round trips
per second for small requests. Also the wall-clock rates of the simulation.

    python bench/bench_link.py [--baud 3000000] [--kib 64] [--round-trips 200]

The bridge stops simulated time while the design is idle and the host has sent nothing, so
device-clock figures count the wire and the gateware, not the host's reaction time (on a board,
add the serial adapter's latency per round trip).
"""
from __future__ import annotations

import argparse
import time

from gen.compiler import compile_model, read_command, write_command
from gen.workloads import digits_vit
from host.__main__ import SIM_DEFAULT
from host.device import Device
from hw.isa import Target
from hw.link import LinkParams
from hw.scratchpad import spad_layout
from sim.bridge import Bridge


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baud", type=int, default=3_000_000)
    ap.add_argument("--clk-mhz", type=float, default=50.0)
    ap.add_argument("--buffer", type=int, default=1024, help="receive buffer bytes")
    ap.add_argument("--kib", type=int, default=64, help="KiB moved each way")
    ap.add_argument("--round-trips", type=int, default=200)
    args = ap.parse_args(argv)

    cfg = SIM_DEFAULT
    link = LinkParams(buffer=args.buffer, clk_hz=int(args.clk_mhz * 1e6), baud=args.baud,
                      timeout_us=max(400, int(200 * 10e6 / args.baud)))
    im, _ = digits_vit(cfg, 0)
    prog = compile_model(im, cfg)
    sizes = prog.sizes()
    line = args.baud / 10                               # bytes/s on an 8N1 line
    spad = spad_layout(cfg)
    entry = spad.size // 8                              # bytes per scratchpad word
    n = min(args.kib * 1024 // entry, sizes.spad)
    rows = [[(i * 31 + j) % 251 - 125 for j in range(cfg.cols)] for i in range(n)]
    data = n * entry
    print(f"link: {args.baud} baud ({line / 1e3:.0f} kB/s), {args.clk_mhz:g} MHz core "
          f"({link.cycles_per_byte:.1f} cycles/byte), receive buffer {args.buffer} B; "
          f"{data} bytes each way")
    with Bridge(cfg, sizes, link) as bridge:
        dev = Device.open(bridge.url, baud=args.baud, timeout=5.0)
        dev.hello()
        dev.attach(prog)

        def timed(fn):
            u0, t0 = dev.status()["uptime"], time.monotonic()
            out = fn()
            wall = time.monotonic() - t0
            cycles = (dev.status()["uptime"] - u0) % (1 << 32)
            return out, cycles / link.clk_hz, wall

        b0 = dev.link.stats.bytes_out
        _, dev_s, wall = timed(lambda: dev._transfer(write_command(Target.SPAD, spad, 0, rows)))
        wire_out = dev.link.stats.bytes_out - b0
        b0 = dev.link.stats.bytes_in
        back, rdev_s, rwall = timed(lambda: dev._transfer(read_command(Target.SPAD, 0, n)))
        wire_in = dev.link.stats.bytes_in - b0
        assert len(back) * 4 == data
        _, sdev_s, swall = timed(lambda: [dev.status() for _ in range(args.round_trips)])
        st = dev.link.stats
        dev.close()

    rows_out = [
        ("host -> device (WRITE, 1 KiB frames)", data, dev_s, wall, wire_out),
        ("device -> host (READ, 4 KiB replies)", data, rdev_s, rwall, wire_in),
    ]
    print("\n| direction | data bytes/s (device clock) | of line rate | wire bytes | "
          "data bytes/s (wall, simulated) |")
    print("|---|---|---|---|---|")
    for name, nbytes, dsec, wsec, wire in rows_out:
        print(f"| {name} | {nbytes / dsec:,.0f} | {100 * nbytes / dsec / line:.1f} % | "
              f"{wire:,} for {nbytes:,} | {nbytes / wsec:,.0f} |")
    per = sdev_s / args.round_trips
    print(f"\nsmall requests (STATUS, 16-byte request, 56-byte reply): {1 / per:,.0f} round trips/s "
          f"device clock ({per * 1e6:.0f} us each), {args.round_trips / swall:,.0f}/s wall; "
          f"retries {st.retries}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
