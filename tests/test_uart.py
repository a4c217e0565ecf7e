"""The UART PHY (:mod:`hw.uart`) in amaranth.sim against a bit-level line model: bytes sent by a
host whose clock is off by up to ±2 % arrive intact, every transmitted bit edge is within one
cycle of its ideal time (so the average rate is exact), framing errors and glitches are caught."""
import random

import pytest
from amaranth.sim import Simulator
from simstreams import wait_for

from hw.config import ConfigError
from hw.uart import BaudRate, Uart

RATES = [(25_000_000, 3_000_000), (50_000_000, 3_000_000), (48_000_000, 3_000_000),
         (12_000_000, 1_000_000)]
EDGE_BYTES = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0xA5, 0x5A]


def line_waveform(data: list[int], cycles_per_bit: float, *, gap: float = 0.0,
                  stop_bits=None) -> list[int]:
    """The rx line, one level per clock cycle, for bytes sent back to back (``gap`` idle bits
    between them) at ``cycles_per_bit``; ``stop_bits[i]`` overrides byte i's stop level."""
    bits = [1] * 4
    for n, byte in enumerate(data):
        stop = 1 if stop_bits is None else stop_bits[n]
        bits += [0, *((byte >> k) & 1 for k in range(8)), stop] + [1] * round(gap * 4)
    bits += [1] * 4
    total = round(len(bits) * cycles_per_bit)
    return [bits[min(len(bits) - 1, int(c / cycles_per_bit))] for c in range(total)]


def run_uart(rate: tuple[int, int], rx_wave: list[int] = (), send: list[int] = (),
             cycles: int = 0):
    clk_hz, baud = rate
    dut = Uart(clk_hz, baud)
    got, tx_trace = [], []
    cycles = max(cycles, len(rx_wave))

    async def drive(ctx):
        ctx.set(dut.o.ready, 1)
        for level in rx_wave:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def collect(ctx):
        for _ in range(cycles):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))

    async def transmit(ctx):
        for byte in send:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            await wait_for(ctx, dut.i.ready, f"byte {byte:#04x} never taken by the transmitter")
        ctx.set(dut.i.valid, 0)

    async def watch(ctx):
        for _ in range(cycles):
            tx_trace.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1 / clk_hz)
    for tb in (drive, collect, transmit, watch):
        sim.add_testbench(tb)
    sim.run()
    return got, tx_trace, dut


@pytest.mark.parametrize("rate", RATES, ids=lambda r: f"{r[0] // 10**6}MHz_{r[1] // 1000}k")
@pytest.mark.parametrize("skew", [-0.02, 0.0, 0.02])
def test_receive_with_host_clock_skew(rate, skew):
    rnd = random.Random(hash((rate, skew)) & 0xFFFF)
    data = EDGE_BYTES + [rnd.randrange(256) for _ in range(24)]
    cpb = rate[0] / rate[1] * (1 + skew)
    got, _, dut = run_uart(rate, line_waveform(data, cpb))
    assert got == data


@pytest.mark.parametrize("rate", RATES, ids=lambda r: f"{r[0] // 10**6}MHz_{r[1] // 1000}k")
def test_transmit_edges_within_one_cycle(rate):
    rnd = random.Random(1)
    data = EDGE_BYTES + [rnd.randrange(256) for _ in range(8)]
    period = rate[0] / rate[1]
    _, trace, _ = run_uart(rate, send=data, cycles=round(period * 10 * (len(data) + 2)))
    # bytes go back to back: decode on one ideal bit grid from the first start edge
    t0 = trace.index(0)
    bits = [trace[t0 + int((k + 0.5) * period)] for k in range(10 * len(data))]
    for j, byte in enumerate(data):
        frame = bits[10 * j:10 * j + 10]
        assert frame[0] == 0 and frame[9] == 1, f"byte {j}: bad start/stop bit"
        assert sum(b << k for k, b in enumerate(frame[1:9])) == byte, f"byte {j}"
    # every edge lies within one cycle of that grid: the average rate is exact
    edges = [c for c in range(t0, len(trace)) if trace[c] != trace[c - 1]]
    worst = max(abs((e - t0) - round((e - t0) / period) * period) for e in edges)
    assert worst < 1.0, f"a bit edge is {worst:.2f} cycles off the ideal grid"
    assert trace[round(t0 + 10 * len(data) * period) + 1:] == [1] * (len(trace) - round(
        t0 + 10 * len(data) * period) - 1)


def test_frame_error_and_glitch():
    rate = RATES[0]
    cpb = rate[0] / rate[1]
    wave = line_waveform([0x12, 0x34, 0x56], cpb, gap=1, stop_bits=[1, 0, 1])
    glitch = [1] * 20 + [0, 0] + [1] * 40             # shorter than half a bit: ignored
    got, _, dut = run_uart(rate, wave + glitch + line_waveform([0x78], cpb))
    assert got == [0x12, 0x56, 0x78]


def test_frame_error_counter():
    rate = RATES[1]
    cpb = rate[0] / rate[1]
    dut = Uart(*rate)
    wave = line_waveform([0x12, 0x34, 0x56], cpb, gap=1, stop_bits=[0, 0, 1])
    seen = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for level in wave:
            ctx.set(dut.rx, level)
            await ctx.tick()
        seen.append(ctx.get(dut.frame_errors))

    sim = Simulator(dut)
    sim.add_clock(1 / rate[0])
    sim.add_testbench(tb)
    sim.run()
    assert seen == [2]


def test_baud_rate_fraction():
    r = BaudRate(25_000_000, 3_000_000)
    assert (r.modulus, r.step) == (25, 3)
    assert r.cycles_per_bit == pytest.approx(8.333, abs=1e-3)
    assert BaudRate(48_000_000, 3_000_000).edge_jitter == 0.0


@pytest.mark.parametrize("args, msg", [
    ((12_000_000, 3_000_000), "baud 3000000 at 12000000 Hz is 4.00 cycles per bit; the UART "
                              "needs at least 6"),
    ((0, 9600), "clk_hz=0: must be a positive integer"),
    ((50_000_000, 0), "baud=0: must be a positive integer"),
    ((50_000_001, 3_000_001), "reduces to 50000001/3000001: choose rates"),
])
def test_bad_rates(args, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
        BaudRate(*args)
