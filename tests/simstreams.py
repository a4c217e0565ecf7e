"""amaranth.sim helpers: feed and drain ``stream.Signature`` ports with random stalls."""
import random

from amaranth.sim import Simulator


async def feed(ctx, port, payloads, rnd: random.Random, stall: float = 0.0):
    for payload in payloads:
        while rnd.random() < stall:
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload, payload)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)


async def drain(ctx, port, count, rnd: random.Random, stall: float = 0.0, until_last=False):
    """Collect ``count`` beats, or with ``until_last`` ``count`` rows (lists of beats, each row
    ending with a beat whose ``last`` is set)."""
    beats, rows = [], []
    while (len(rows) if until_last else len(beats)) < count:
        ready = rnd.random() >= stall
        ctx.set(port.ready, ready)
        *_, payload, valid = await ctx.tick().sample(port.payload, port.valid)
        if ready and valid:
            beats.append(payload)
            if until_last and payload.last:
                rows.append(beats)
                beats = []
    ctx.set(port.ready, 0)
    return rows if until_last else beats


def simulate(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()
