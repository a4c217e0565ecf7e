"""The lane gearboxes between scratchpad words and narrower vector units (amaranth.sim): rows of
every length class (1, shorter than a word, exactly one, one more, many words) under random
stalls on both sides, beat shapes and values checked; the splitter sustains one narrow beat per
cycle."""
import random

import pytest
from simstreams import drain, feed, simulate

from hw.gearbox import LaneGatherer, LaneSplitter

WIDTH = 16
MIN, MAX = -(1 << (WIDTH - 1)), (1 << (WIDTH - 1)) - 1


def _rows(wide, rnd):
    lengths = [1, wide - 1, wide, wide + 1, 3 * wide, 5 * wide + 3, 2] + \
              [rnd.randrange(1, 6 * wide) for _ in range(10)]
    rows = [[rnd.randint(MIN, MAX) for _ in range(n)] for n in lengths if n >= 1]
    rows.append([MAX] * wide + [MIN] * (wide // 2 + 1) + [0])
    return rows


def _beats(rows, lanes, rnd):
    """Each row as canonical beats of ``lanes`` (full but the last); lanes past ``count``
    carry junk, which must never come out."""
    out = []
    for row in rows:
        for s in range(0, len(row), lanes):
            part = row[s:s + lanes]
            junk = [rnd.randint(MIN, MAX) for _ in range(lanes - len(part))]
            out.append({"data": part + junk, "count": len(part), "last": s + lanes >= len(row)})
    return out


def _valid(beat):
    return list(beat.data)[:beat.count], beat.count, bool(beat.last)


def _expect(beats):
    return [(b["data"][:b["count"]], b["count"], b["last"]) for b in beats]


def _check_through(dut, ins, want, rnd, stall):
    got = []

    async def producer(ctx):
        await feed(ctx, dut.i, ins, rnd, stall)

    async def consumer(ctx):
        got.extend(await drain(ctx, dut.o, len(want), rnd, stall))

    simulate(dut, producer, consumer)
    assert [_valid(b) for b in got] == _expect(want)


@pytest.mark.parametrize("wide, narrow", [(8, 2), (8, 1), (16, 4), (4, 4), (2, 1)])
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_splitter(wide, narrow, stall):
    rnd = random.Random(wide * 10 + narrow)
    rows = _rows(wide, rnd)
    ins, want = _beats(rows, wide, rnd), _beats(rows, narrow, rnd)
    _check_through(LaneSplitter(WIDTH, wide, narrow), ins, want, rnd, stall)


@pytest.mark.parametrize("wide, narrow", [(8, 2), (8, 1), (16, 4), (4, 4), (2, 1)])
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_gatherer(wide, narrow, stall):
    rnd = random.Random(wide * 10 + narrow + 1)
    rows = _rows(wide, rnd)
    ins, want = _beats(rows, narrow, rnd), _beats(rows, wide, rnd)
    _check_through(LaneGatherer(WIDTH, narrow, wide), ins, want, rnd, stall)


def test_splitter_one_beat_per_cycle():
    """With both sides always ready, narrow beats leave back to back: one per cycle from the
    first to the last, across word and row boundaries."""
    rnd = random.Random(5)
    rows = _rows(8, rnd)
    ins, want = _beats(rows, 8, rnd), _beats(rows, 2, rnd)
    dut, cycles = LaneSplitter(WIDTH, 8, 2), []

    async def producer(ctx):
        await feed(ctx, dut.i, ins, rnd)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        n = 0
        while len(cycles) < len(want):
            assert n < 10 * len(want), f"only {len(cycles)} of {len(want)} beats came out"
            *_, valid = await ctx.tick().sample(dut.o.valid)
            n += 1
            if valid:
                cycles.append(n)

    simulate(dut, producer, consumer)
    assert cycles[-1] - cycles[0] == len(want) - 1


@pytest.mark.parametrize("cls, args, message", [
    (LaneSplitter, (16, 8, 3), r"narrow \(3 lanes\) must divide wide \(8 lanes\)"),
    (LaneGatherer, (16, 0, 8), "narrow must be a positive integer, not 0"),
])
def test_gearbox_errors(cls, args, message):
    with pytest.raises(ValueError, match=message):
        cls(*args)
