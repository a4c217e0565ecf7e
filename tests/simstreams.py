"""amaranth.sim helpers: feed and drain ``stream.Signature`` ports with random stalls.

Every wait is bounded: a port that stops moving for ``PATIENCE`` cycles fails the test with the
port named, instead of hanging it (a broken handshake or queue must fail, not stall CI)."""
import random

from amaranth.sim import Simulator

PATIENCE = 20_000       # cycles a port may stay blocked (far above any unit's row latency)


async def wait_for(ctx, signal, what: str, patience: int = PATIENCE, sample=()):
    """Tick until ``signal`` is sampled high at a clock edge; fail after ``patience`` edges.
    Returns the values of the ``sample`` signals at that edge."""
    for _ in range(patience):
        *_, value = values = await ctx.tick().sample(*sample, signal)
        if value:
            return values[-1 - len(sample):-1]
    raise AssertionError(f"{what}: no progress in {patience} cycles")


async def feed(ctx, port, payloads, rnd: random.Random, stall: float = 0.0,
               patience: int = PATIENCE):
    for n, payload in enumerate(payloads):
        while rnd.random() < stall:
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload, payload)
        await wait_for(ctx, port.ready, f"input beat {n} of {len(payloads)} never accepted",
                       patience)
        ctx.set(port.valid, 0)


async def drain(ctx, port, count, rnd: random.Random, stall: float = 0.0, until_last=False,
                patience: int = PATIENCE):
    """Collect ``count`` beats, or with ``until_last`` ``count`` rows (lists of beats, each row
    ending with a beat whose ``last`` is set)."""
    beats, rows = [], []
    idle = 0                                    # cycles since the last beat
    while (len(rows) if until_last else len(beats)) < count:
        ready = rnd.random() >= stall
        ctx.set(port.ready, ready)
        *_, payload, valid = await ctx.tick().sample(port.payload, port.valid)
        idle = 0 if ready and valid else idle + 1
        if idle > patience:
            got = len(rows) if until_last else len(beats)
            raise AssertionError(f"output stalled after {got} of {count} "
                                 f"{'rows' if until_last else 'beats'}: no beat in {patience} "
                                 "cycles")
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
