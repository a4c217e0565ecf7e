"""Fast amaranth.sim tests of the divider, GELU and Shiftmax units against gen.intops (the cocotb
benches in test_hw_cocotb.py are the full check), and their construction errors."""
import random

import numpy as np
import pytest
from simstreams import drain, feed, simulate

from gen import intops
from gen.unit_params import gelu_from as gelu_params
from gen.unit_params import shiftgelu as sg_params
from gen.unit_params import shiftmax as softmax_params
from hw.divider import SequentialDivider
from hw.gelu import GeluUnit
from hw.softmax import Shiftmax

ENGINE_STEPS = [(1, False), (2, False), (1, True)]       # bits per cycle, split steps


@pytest.mark.parametrize("radix_bits, split", ENGINE_STEPS)
@pytest.mark.parametrize("nb, db", [(8, 4), (31, 31), (62, 40)])
def test_divider(nb, db, radix_bits, split):
    rnd = random.Random(nb)
    cases = [((1 << nb) - 1, 1), (0, 5), (5, (1 << db) - 1), ((1 << nb) - 1, (1 << db) - 1),
             (7, 0)] + [(rnd.randrange(1 << nb), rnd.randrange(1, 1 << db)) for _ in range(40)]
    dut, got = SequentialDivider(nb, db, radix_bits, split_steps=split), []

    async def producer(ctx):
        await feed(ctx, dut.i, [{"num": n, "den": d} for n, d in cases], rnd, 0.3)

    async def consumer(ctx):
        got.extend(await drain(ctx, dut.o, len(cases), rnd, 0.3))

    simulate(dut, producer, consumer)
    assert got == [n // d if d else (1 << nb) - 1 for n, d in cases]


@pytest.mark.parametrize("radix_bits, split", ENGINE_STEPS)
@pytest.mark.parametrize("nb, db, qb", [(62, 40, 47), (31, 31, 31), (28, 11, 16), (8, 4, 3)])
def test_divider_quotient_bound(nb, db, qb, radix_bits, split):
    """With ``quotient_bits`` the leading quotient bits are skipped: exact for every division whose
    quotient is below ``2^qb`` (the largest such numerator, the smallest denominators)."""
    rnd = random.Random(nb + qb)
    cases = []
    for _ in range(40):
        den = rnd.choice([1, 2, 3, (1 << db) - 1, rnd.randrange(1, 1 << db)])
        top = min((1 << nb) - 1, den * (1 << qb) - 1)       # largest num with num // den < 2^qb
        cases.append((rnd.choice([top, 0, rnd.randrange(top + 1)]), den))
    dut, got = SequentialDivider(nb, db, radix_bits, quotient_bits=qb, split_steps=split), []

    async def producer(ctx):
        await feed(ctx, dut.i, [{"num": n, "den": d} for n, d in cases], rnd, 0.3)

    async def consumer(ctx):
        got.extend(await drain(ctx, dut.o, len(cases), rnd, 0.3))

    simulate(dut, producer, consumer)
    assert got == [n // d for n, d in cases]


def _rows_through(dut, rows, lanes, params, stall, seed=0, error=None):
    rnd = random.Random(seed)
    beats = []
    for row in rows:
        chunks = [row[k:k + lanes] for k in range(0, len(row), lanes)]
        beats += [{"data": [int(v) for v in c] + [0] * (lanes - len(c)), "count": len(c),
                   "last": int(b == len(chunks) - 1)} for b, c in enumerate(chunks)]
    got = []

    async def producer(ctx):
        if params is not None:
            ctx.set(dut.params, params)
        await feed(ctx, dut.i, beats, rnd, stall)

    async def consumer(ctx):
        for row in await drain(ctx, dut.o, len(rows), rnd, stall, until_last=True):
            got.append([v for beat in row for v in list(beat.data)[:beat.count]])
        if error is not None:
            error.append(ctx.get(dut.error))

    simulate(dut, producer, consumer)
    return got


@pytest.mark.parametrize("in_bits, scale", [(8, 4 / 127), (16, 1e-3), (8, 0.5)])
def test_gelu_unit(in_bits, scale):
    lo, hi = -(1 << (in_bits - 1)), 1 << (in_bits - 1)
    q = np.concatenate([[lo, hi - 1, 0, -1, 1],
                        np.random.default_rng(0).integers(lo, hi, 60)]).astype(np.int64)
    k = intops.ct_gelu_poly(scale, in_bits)
    got = _rows_through(GeluUnit(lanes=3, in_bits=in_bits), [q], 3, gelu_params(k), 0.3)
    assert got[0] == intops.gelu_poly(q, scale, consts=k)[0].tolist()


def test_gelu_unit_new_params_after_load():
    """Layers back to back, as the controller runs them: the parameters change (with a ``load``
    pulse, the cycle their registers take them) and elements follow at once; every element
    must use the new table, none a stale entry of the previous layer's."""
    rnd, rng = random.Random(7), np.random.default_rng(7)
    layers = [(4 / 127, 8), (0.5, 8), (0.02, 8), (0.5, 8)]
    dut, got = GeluUnit(lanes=2, in_bits=8), []
    inputs = [np.concatenate([[-128, 127, 0], rng.integers(-128, 128, 21)]) for _ in layers]

    async def bench(ctx):
        for (scale, bits), q in zip(layers, inputs):
            ctx.set(dut.params, gelu_params(intops.ct_gelu_poly(scale, bits)))
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
            beats = [{"data": [int(v) for v in q[k:k + 2]], "count": 2,
                      "last": int(k + 2 == len(q))} for k in range(0, len(q), 2)]
            # the unit's output queue holds a layer's 12 beats: feed them, then collect
            await feed(ctx, dut.i, beats, rnd)
            rows = await drain(ctx, dut.o, 1, rnd, until_last=True)
            got.append([v for beat in rows[0] for v in list(beat.data)[:beat.count]])

    simulate(dut, bench)
    for (scale, bits), q, g in zip(layers, inputs, got):
        k = intops.ct_gelu_poly(scale, bits)
        assert g == intops.gelu_poly(q, scale, consts=k)[0].tolist(), scale


@pytest.mark.parametrize("mode", ["ivit", "dyad"])
@pytest.mark.parametrize("lanes, length, scale, out_bits",
                         [(4, 17, 0.05, 16), (3, 9, 0.2, 8), (1, 5, 0.01, 16), (4, 1, 0.3, 16)])
def test_shiftmax_unit(mode, lanes, length, scale, out_bits):
    rng = np.random.default_rng(length)
    rows = rng.integers(-128, 128, (4, length))
    rows[1] = 127
    rows[2] = -128
    rows[3] = -128
    rows[3, length // 2] = 127
    dut = Shiftmax(mode=mode, lanes=lanes, max_row=32)
    got = _rows_through(dut, rows, lanes, softmax_params(mode, scale, length, out_bits), 0.3)
    want, _ = intops.shiftmax(rows, scale, out_bits=out_bits, mode=mode)
    assert got == want.tolist()


@pytest.mark.parametrize("kw, message", [
    (dict(mode="fp32", lanes=4), "mode must be 'ivit' or 'dyad'"),
    (dict(mode="dyad", lanes=0), "lanes must be a positive integer"),
    (dict(mode="dyad", lanes=4, in_bits=12), "in_bits must be 8 or 16"),
    (dict(mode="dyad", lanes=4, max_row=0), r"max_row must be an integer in \[1, 4096\]"),
])
def test_shiftmax_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        Shiftmax(**kw)


def test_gelu_and_divider_errors():
    with pytest.raises(ValueError, match="in_bits must be 8 or 16"):
        GeluUnit(lanes=4, in_bits=9)
    with pytest.raises(ValueError, match="lanes must be a positive integer"):
        GeluUnit(lanes=0, in_bits=8)
    with pytest.raises(ValueError, match=r"num_bits must be an integer in \[1, 64\]"):
        SequentialDivider(0, 4)
    with pytest.raises(ValueError, match="split_steps needs bits_per_cycle 1"):
        SequentialDivider(8, 4, 2, split_steps=True)
    with pytest.raises(ValueError, match="coefficient does not fit"):
        k = intops.ct_gelu_poly(4 / 127, 8, frac_bits=16)
        gelu_params(intops.GeluPoly(k.seg_shift, k.frac_bits, k.guard, (1 << 30,), (0,), (0,)))


@pytest.mark.parametrize("mode", ["ivit", "dyad"])
@pytest.mark.parametrize("lanes, length, in_bits, split",
                         [(4, 18, 16, False), (3, 9, 8, False), (1, 1, 16, False),
                          (4, 32, 16, False), (4, 18, 16, True), (1, 3, 8, True)])
def test_layernorm_unit(mode, lanes, length, in_bits, split):
    from hw.layernorm import LayerNorm
    rng = np.random.default_rng(length + lanes)
    hi = (1 << (in_bits - 1)) - 1
    rows = [np.clip(np.rint(rng.normal(0, s * hi, length)), -hi - 1, hi).astype(np.int64)
            for s in (0.01, 0.3, 1.0)]
    rows += [np.full(length, 77), np.full(length, -hi - 1), np.arange(length) - length // 2,
             np.where(np.arange(length) % 2, hi, -hi - 1)]
    got = _rows_through(LayerNorm(mode=mode, lanes=lanes, in_bits=in_bits, max_row=32,
                                  split_engines=split), rows,
                        lanes, None, 0.3)
    for row, g in zip(rows, got):
        assert g == intops.layernorm_normalize(row, mode=mode)[0].tolist()


@pytest.mark.parametrize("per_cycle, split", ENGINE_STEPS)
@pytest.mark.parametrize("bits", [2, 9, 45, 62])
def test_isqrt_unit(bits, per_cycle, split):
    from hw.isqrt import SequentialSqrt
    rnd = random.Random(bits)
    cases = [c for c in (0, 1, 2, 3, 4, (1 << bits) - 1) if c < 1 << bits]
    cases += [rnd.randrange(1 << bits) for _ in range(30)]
    roots = [rnd.randrange(1, 1 << (bits // 2)) for _ in range(10)] + [(1 << (bits // 2)) - 1]
    cases += [v for r in roots for v in (r * r - 1, r * r, r * r + 2 * r)]   # each side of a root
    if bits <= 9:
        cases = list(range(1 << bits))
    dut, got = SequentialSqrt(bits, per_cycle, split), []

    async def producer(ctx):
        await feed(ctx, dut.i, cases, rnd, 0.3)

    async def consumer(ctx):
        got.extend(await drain(ctx, dut.o, len(cases), rnd, 0.3))

    simulate(dut, producer, consumer)
    assert got == [int(v) for v in intops.isqrt(np.array(cases, np.int64))]


@pytest.mark.parametrize("lanes, length, in_bits, scale",
                         [(3, 9, 8, 0.1), (1, 1, 16, 8 / 127)])
def test_shiftgelu_unit(lanes, length, in_bits, scale):
    from hw.shiftgelu import ShiftGelu
    rng = np.random.default_rng(length)
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    rows = [rng.integers(lo, hi + 1, length) for _ in range(3)]
    rows += [np.full(length, lo), np.full(length, hi), np.full(length, -3),     # all-negative
             np.where(np.arange(length) == 0, hi, lo)]
    got = _rows_through(ShiftGelu(lanes=lanes, in_bits=in_bits, max_row=32), rows, lanes,
                        sg_params(scale), 0.3)
    for row, g in zip(rows, got):
        assert g == intops.shift_gelu(row, scale, mode="ivit")[0].tolist()


@pytest.mark.parametrize("unit", ["shiftmax", "layernorm", "shiftgelu"])
def test_row_units_survive_overlong_rows(unit):
    """A row longer than ``max_row`` sets the sticky ``error``, comes out truncated to its slot
    (never overrunning the next row's), and the rows around it stay bit-exact."""
    from hw.layernorm import LayerNorm
    from hw.shiftgelu import ShiftGelu
    lanes, max_row = 4, 8
    rng = np.random.default_rng(7)
    rows = [rng.integers(-128, 128, n) for n in (8, 14, 5, 8, 8)]
    if unit == "shiftmax":
        dut, params = Shiftmax(mode="dyad", lanes=lanes, max_row=max_row), \
            softmax_params("dyad", 0.05, 8, 16)
        golden = [intops.shiftmax(r, 0.05, out_bits=16, mode="dyad")[0].tolist()
                  for r in rows]
    elif unit == "layernorm":
        dut, params = LayerNorm(mode="dyad", lanes=lanes, in_bits=8, max_row=max_row), None
        golden = [intops.layernorm_normalize(r, mode="dyad")[0].tolist() for r in rows]
    else:
        dut, params = ShiftGelu(lanes=lanes, max_row=max_row), sg_params(0.1)
        golden = [intops.shift_gelu(r, 0.1, mode="ivit")[0].tolist() for r in rows]
    error = []
    got = _rows_through(dut, rows, lanes, params, 0.3, error=error)
    assert error == [1]
    assert len(got) == len(rows) and len(got[1]) <= max_row
    for k in (0, 3, 4):
        assert got[k] == golden[k], f"row {k}"
    if unit != "shiftmax":            # a 5-element row's dyad constants differ from the 8's
        assert got[2] == golden[2]
