"""Fast amaranth.sim tests of the array and the requantizer (the cocotb benches are the full check),
plus configuration validation with exact messages."""
import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from simstreams import drain, feed, simulate, wait_for

from gen import intops
from hw.config import DEVICES, PRESETS, AcceleratorConfig, ConfigError
from hw.requant import Requantizer
from hw.systolic import SystolicArray


def _run_array(cfg, ks, stall, seed=0):
    rng, rnd = np.random.default_rng(seed), random.Random(seed)
    dut = SystolicArray(cfg)
    alo, ahi = -(1 << (cfg.abits - 1)), 1 << (cfg.abits - 1)
    wlo, whi = -(1 << (cfg.wbits - 1)), 1 << (cfg.wbits - 1)
    tiles = [(rng.integers(alo, ahi, (cfg.rows, k)), rng.integers(wlo, whi, (k, cfg.cols)))
             for k in ks]
    tiles.append((np.full((cfg.rows, cfg.kmax), alo), np.full((cfg.kmax, cfg.cols), wlo)))
    got = []

    async def feed_a(ctx):
        await feed(ctx, dut.a, [{"data": [int(v) for v in A[:, k]], "last": int(k == A.shape[1]
                                 - 1)} for A, _ in tiles for k in range(A.shape[1])], rnd, stall)

    async def feed_b(ctx):
        await feed(ctx, dut.b, [[int(v) for v in B[k]] for _, B in tiles
                                for k in range(B.shape[0])], rnd, stall)

    async def drain(ctx):
        for _ in tiles:
            rows = []
            for i in range(cfg.rows):
                while rnd.random() < stall:
                    await ctx.tick()
                ctx.set(dut.o.ready, 1)
                payload, = await wait_for(ctx, dut.o.valid, f"array output stalled at row {i}",
                                          sample=(dut.o.payload,))
                ctx.set(dut.o.ready, 0)
                assert payload.last == (i == cfg.rows - 1)
                rows.append(list(payload.data))
            got.append(np.array(rows))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in (feed_a, feed_b, drain):
        sim.add_testbench(tb)
    sim.run()
    for n, ((A, B), G) in enumerate(zip(tiles, got)):
        assert np.array_equal(A @ B, G), f"tile {n}"


@pytest.mark.parametrize("kw", [dict(rows=4, cols=4), dict(rows=3, cols=5, wbits=4),
                                dict(rows=5, cols=2, abits=16), dict(rows=1, cols=1),
                                dict(rows=4, cols=2, lanes=1, mbits=15, device="ice40-up5k"),
                                dict(rows=4, cols=4, pe="fip"),
                                dict(rows=3, cols=5, wbits=4, pe="fip"),
                                dict(rows=5, cols=2, abits=16, pe="fip"),
                                dict(rows=1, cols=1, pe="fip")])
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_array_amaranth_sim(kw, stall):
    cfg = AcceleratorConfig(kmax=32, **kw)
    _run_array(cfg, [1, 2, 3, cfg.tile_spacing, 9, 1, 17], stall)


def test_requant_amaranth_sim():
    from sim.bench_requant import expected, vectors
    cfg = AcceleratorConfig(rows=4, cols=3)
    beats = vectors(cfg, 60, np.random.default_rng(3))
    dut, rnd, got = Requantizer(cfg), random.Random(3), []

    async def producer(ctx):
        await feed(ctx, dut.i, beats, rnd, 0.3)

    async def consumer(ctx):
        got.extend(list(p.data) for p in await drain(ctx, dut.o, len(beats), rnd, 0.3))

    simulate(dut, producer, consumer)
    for bt, g in zip(beats, got):
        assert g == expected(bt).tolist()


@pytest.mark.parametrize("lanes,depth", [(2, 16), (8, 40), (16, 64)])
def test_scratchpad_memory(lanes, depth):
    """Every read port against a model of the memory: random element-enabled writes (edge values
    -128, 127, 0 among them), stored ``WRITE_DELAY`` cycles after they are given, every port
    reading every cycle, the first and last addresses included; each port's word compared
    ``latency`` cycles after its address with the writes stored at earlier edges than its read's
    (``latency - 1`` cycles after the address), the address just written read back as soon as
    that allows."""
    from hw.scratchpad_memory import DIRECT, REGISTERED, WRITE_DELAY, ScratchpadMemory
    latencies = (REGISTERED, DIRECT, REGISTERED)
    assert max(latencies) - 1 <= WRITE_DELAY        # every write a read could meet is known
    dut = ScratchpadMemory(lanes, depth, latencies)
    rnd, cycles = random.Random(lanes * depth), 400
    model = [[0] * lanes for _ in range(depth)]
    stores = {}                             # edge (cycle) -> (address, data, enables)
    checked = []

    def element():
        return rnd.choice([-128, 127, 0, -1, rnd.randrange(-128, 128)])

    async def bench(ctx):
        reads = []                          # (read edge, due cycle, port, address)
        last_write = 0
        for cycle in range(cycles):
            waddr = rnd.choice([0, depth - 1, last_write, rnd.randrange(depth)])
            wdata = [element() for _ in range(lanes)]
            wen = [int(rnd.random() < 0.5) for _ in range(lanes)]
            writing = rnd.random() < 0.7 and cycle < cycles - 4
            ctx.set(dut.write.addr, waddr)
            ctx.set(dut.write.data, wdata)
            ctx.set(dut.write.en, int("".join(map(str, reversed(wen))), 2) if writing else 0)
            if writing:
                stores[cycle + WRITE_DELAY] = (waddr, wdata, wen)
                last_write = waddr
            for n, lat in enumerate(latencies):
                edge = cycle + lat - 1
                raddr = rnd.choice([0, depth - 1, last_write, rnd.randrange(depth)])
                # never the address stored at the read's own edge (undefined on a block RAM)
                if edge in stores and stores[edge][0] == raddr:
                    raddr = (raddr + 1) % depth
                ctx.set(dut.read[n].addr, raddr)
                reads.append((edge, cycle + lat, n, raddr))
            # the words read at this edge, from the stores of the edges before it
            reads = [(e, due, n, a if e != cycle else list(model[a])) for e, due, n, a in reads]
            for _, due, n, want in [r for r in reads if r[1] == cycle]:
                assert [ctx.get(dut.read[n].data[e]) for e in range(lanes)] == want, \
                    f"port {n} (latency {latencies[n]}), cycle {cycle}"
                checked.append(due)
            reads = [r for r in reads if r[1] > cycle]
            if cycle in stores:
                addr, wdata_, wen_ = stores.pop(cycle)
                for e in range(lanes):
                    if wen_[e]:
                        model[addr][e] = wdata_[e]
            await ctx.tick()

    simulate(dut, bench)
    assert len(checked) > 3 * (cycles - 4)


# --------------------------------------------------------------------------------------------------

def test_config_derived():
    cfg = AcceleratorConfig(rows=16, cols=16, wbits=8, abits=8, kmax=4096)
    assert cfg.acc_bits == 8 + 8 + 12
    assert cfg.requant_dsps == 16 * 6                 # (33x32: 2x2 blocks) + (16x32: 2 blocks)
    assert cfg.vector_dsps == 437                       # beyond the 85F: LUT multipliers only
    assert (cfg.dsp_products, cfg.lut_products) == (0, 256)
    assert AcceleratorConfig(rows=4, cols=4, row_units=1).lut_products == 0
    ulx3s = PRESETS["ulx3s-8x8"]
    assert (ulx3s.requant_dsps, ulx3s.vector_dsps, ulx3s.dsp_products) == (6, 38, 0)
    assert ulx3s.replace(array_dsps=10).dsp_products == 10
    assert ulx3s.replace(array_dsps=-1).dsp_products == 64
    assert AcceleratorConfig(rows=8, cols=8, lanes=2).requant_dsps == 8 * 6     # one per column
    assert AcceleratorConfig(rows=8, cols=8, requant_lanes=2).requant_dsps == 2 * 6
    assert ulx3s.replace(rows=4, cols=4).requant_lanes == 2       # narrowed lanes are kept
    assert ulx3s.replace(rows=2, cols=2).requant_lanes == 2
    assert AcceleratorConfig(rows=16, cols=16, mbits=17).requant_dsps == 16 * 3
    assert AcceleratorConfig(abits=16, kmax=1000).acc_bits == 8 + 16 + 10
    d = AcceleratorConfig.from_dict(__import__("json").loads(cfg.to_json()))
    assert d == cfg
    assert set(PRESETS) >= {"ecp5-8x8", "ecp5-16x16", "icebreaker"}
    assert DEVICES["ecp5-85f"].dsps == 156


@pytest.mark.parametrize("kw, message", [
    (dict(rows=0), "rows=0: must be a positive integer"),
    (dict(cols=-3), "cols=-3: must be a positive integer"),
    (dict(wbits=3), "wbits=3: weight bits must be 4 or 8"),
    (dict(abits=12), "abits=12: activation bits must be 8 or 16"),
    (dict(device="xc7a35t"), "device='xc7a35t': unknown device; known: ecp5-25f"),
    (dict(dataflow="ws"), "dataflow='ws': must be one of"),
    (dict(mbits=40), "mbits=40: must be an integer in"),
    (dict(cols=8, lanes=3), "lanes=3: must divide cols"),
    (dict(cols=8, requant_lanes=3), "requant_lanes=3: must divide cols"),
    (dict(cols=8, requant_lanes=-2), "requant_lanes=-2: must be >= 1"),
    (dict(array_dsps=-2), "array_dsps=-2: must be -1"),
    (dict(rows=2, cols=4, device="ice40-up5k"), "the requantizers need 32 DSPs, ice40-up5k has 8"),
    (dict(rows=32, cols=32, device="ecp5-25f"),
     "array 32x32 does not fit ecp5-25f: 1024 multipliers, 0 in DSPs"),
])
def test_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        AcceleratorConfig(**kw)


def test_requant_matches_intops_definition():
    # the bench's expected() is intops.requant for the non-residual case
    from sim.bench_requant import expected
    lane = {"x": 1000, "b": 24, "m": int(intops.dyadic(0.1)[0]), "e": int(intops.dyadic(0.1)[1]),
            "c": 0, "r": 0, "rm": 0, "re": 1}
    assert expected({"lane": [lane], "wide": 0, "residual": 0}).tolist() == [102]


@pytest.mark.parametrize("abits, wbits, exhaustive", [(8, 4, True), (8, 8, True), (16, 8, False)])
def test_lut_multiplier(abits, wbits, exhaustive):
    """The Booth LUT multiplier against Python's product: exhaustive for 8x4 and 8x8."""
    from amaranth.hdl import Module, Signal, signed

    from hw.multiplier import LATENCY, PipelinedMultiplier
    a, b = Signal(signed(abits)), Signal(signed(wbits))
    mul = PipelinedMultiplier(a, b, use_dsp=False)
    m = Module()
    m.submodules.mul = mul
    alo, ahi = -(1 << (abits - 1)), 1 << (abits - 1)
    wlo, whi = -(1 << (wbits - 1)), 1 << (wbits - 1)
    if exhaustive:
        pairs = [(x, y) for x in range(alo, ahi) for y in range(wlo, whi)]
    else:
        rnd = random.Random(5)
        pairs = [(alo, wlo), (alo, whi - 1), (ahi - 1, wlo), (ahi - 1, whi - 1), (0, wlo)]
        pairs += [(rnd.randrange(alo, ahi), rnd.randrange(wlo, whi)) for _ in range(3000)]
    bad = []

    async def bench(ctx):
        history = []
        for x, y in pairs + [(0, 0)] * LATENCY:
            ctx.set(a, x)
            ctx.set(b, y)
            history.append(x * y)
            await ctx.tick()
            if len(history) >= LATENCY and ctx.get(mul.p) != history[-LATENCY]:
                bad.append((len(history), ctx.get(mul.p), history[-LATENCY]))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, bad[:5]
