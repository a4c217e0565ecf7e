"""Output-stationary systolic MAC array.

Computes tiles ``C[R x C] = A[R x K] @ B[K x C]`` for any ``K`` from 1 to ``kmax``. Per cycle one
*beat* enters: column ``k`` of A (``rows`` activations, on stream ``a``, with ``last`` marking
``k = K - 1``) and row ``k`` of B (``cols`` weights, on stream ``b``). Results leave on ``o`` as
``rows`` beats of one accumulator row each (``last`` on the tile's final row).

Why output-stationary: each PE keeps its accumulator, so ``K`` is unbounded by the array, there is
no weight-preload phase, and a tile costs exactly ``K`` input cycles. Tiles stream back to back
(shadow registers hold the finished tile while the next one accumulates) whenever
``K >= max(rows, cols)``; the measured utilisation is in the README (``bench/array_util.py``).
Weight-stationary needs ``rows`` preload cycles per weight tile and a separate partial-sum
buffer for ``K > rows``, which costs more than it saves for our ``M ~ N ~ K`` GEMMs.

Timing (cycle ``T`` = the cycle a tile's last beat is accepted):

- row ``i`` of A is delayed ``i`` cycles, column ``j`` of B ``j`` cycles (the skew), so PE(i, j)
  sees beat ``k`` in its operand registers at ``k + i + j + 1``; the product is registered twice
  (:mod:`hw.multiplier`) and the accumulator/shadow register written at ``T + i + j + 4``;
- row ``i`` of the finished tile is read from the shadow registers at ``T + cols + 3 + i`` through
  a registered 4:1-per-level mux tree, and pushed into the output FIFO.

**Fast-inner-product PEs** (``pe="fip"``, :meth:`SystolicArray._fip_products`): a PE keeps the
operands of a tile's even beat and, on the odd beat, multiplies ``(a0 + b1)(a1 + b0)`` (one product
per two beats); the two PEs of a column pair see their odd beats on different cycles (they are
one cycle apart on the skew and odd beats are at least two cycles apart), so they share one
multiplier. ``sum a0 a1`` per row and ``sum b0 b1`` per column (the same sharing) are subtracted
at read-out, two registered stages after the row multiplexer. A tile of odd ``K`` gets one zero
beat after its last (a cycle in which no input is taken). For a ``16x16`` int8 array that is 144
multipliers of 9x9 bits instead of 256 of 8x8, so nearly all fit the ECP5-85F's DSP blocks.

The input side enforces the two conditions that make this hazard-free, inserting bubbles only
when they fail: consecutive last beats are at least ``max(rows, cols)`` cycles apart (no shadow
register is overwritten before it is read, one read-out at a time), and a tile only starts when
the output FIFO has room for all its rows (the array never stalls, so no enable fans out to every
PE: back-pressure on ``o`` stops new tiles, never the pipeline).
"""
from __future__ import annotations

import math

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .config import AcceleratorConfig
from .multiplier import LATENCY, PipelinedMultiplier
from .pipeline import delay, register, replica, wire

__all__ = ["SystolicArray", "a_layout", "b_layout", "o_layout"]


def a_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(cfg.abits), cfg.rows), "last": 1})


def b_layout(cfg: AcceleratorConfig) -> data.ArrayLayout:
    return data.ArrayLayout(signed(cfg.wbits), cfg.cols)


def o_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(cfg.acc_bits), cfg.cols),
                              "last": 1})


READ_LATENCY = LATENCY + 1      # operand register -> product (LATENCY) -> accumulator


class SystolicArray(wiring.Component):
    """Output-stationary ``rows x cols`` array of signed MACs (see the module docstring).

    Members
    -------
    a : In(stream.Signature(a_layout))   A columns; ``last`` ends a tile.
    b : In(stream.Signature(b_layout))   B rows; consumed together with ``a``.
    o : Out(stream.Signature(o_layout))  accumulator rows, ``rows`` per tile, ``last`` on the final.
    busy : Out(1)                        a tile is in flight (for performance counters).
    """

    def __init__(self, config: AcceleratorConfig):
        with validating(self):
            if not isinstance(config, AcceleratorConfig):
                raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self._cfg = config
        super().__init__({
            "a": In(stream.Signature(a_layout(config))),
            "b": In(stream.Signature(b_layout(config))),
            "o": Out(stream.Signature(o_layout(config))),
            "busy": Out(1),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._cfg

    @property
    def _fip(self) -> bool:
        return self._cfg.pe == "fip"

    def _multiply(self, m: Module, a, b, index: int, name: str):
        """Array multiplier number ``index`` (which decides DSP or LUTs): ``a * b`` after
        ``LATENCY`` cycles."""
        m.submodules[name] = mul = PipelinedMultiplier(
            a, b, use_dsp=self._cfg.multiplier_uses_dsp(index))
        return mul.p

    def _shared(self, m: Module, users, index: int, name: str):
        """One product per user ``(go, x, y)``, two users per multiplier (numbered from
        ``index``): users 2n and 2n + 1 sit one cycle apart on the skew, so their ``go`` (an odd
        beat) are never high together; the multiplier takes the operands of the one that is."""
        products = []
        for n in range(0, len(users), 2):
            pair = users[n:n + 2]
            (go, x, y), (_, x1, y1) = pair[0], pair[-1]
            xs = wire(m, Mux(go, x, x1) if len(pair) == 2 else x, f"{name}{n // 2}_x")
            ys = wire(m, Mux(go, y, y1) if len(pair) == 2 else y, f"{name}{n // 2}_y")
            products += [self._multiply(m, xs, ys, index + n // 2, f"{name}{n // 2}")] * len(pair)
        return products

    def _fip_products(self, m: Module, a_reg, b_reg, taps):
        """The fast inner product (Pogue & Nicolici, "Fast Inner-Product Algorithms and
        Architectures for Deep Neural Network Accelerators"): over the pairs of a tile's beats,
        ``sum a_k b_k = sum (a0 + b1)(a1 + b0) - sum a0 a1 - sum b0 b1``. Each PE keeps the even
        beat's operands and makes its product on the odd beat, two PEs of a row per multiplier;
        the row terms ``alpha_i = sum a0 a1`` come from column 0's operand registers (two rows
        per multiplier) and the column terms ``beta_j = sum b0 b1`` from row 0's (two columns
        per multiplier). Returns the PEs', the rows' and the columns' shadow registers."""
        cfg = self._cfg
        R, C, bits = cfg.rows, cfg.cols, cfg.acc_bits
        index = 0
        shadow = []
        for i in range(R):
            users = []
            for j in range(C):
                f = taps[i + j + 1]
                a0 = _held(m, a_reg[i][j], f, f"a0_{i}_{j}")
                b0 = _held(m, b_reg[i][j], f, f"b0_{i}_{j}")
                users.append((f.valid & f.odd, a0 + b_reg[i][j], a_reg[i][j] + b0))
            products = self._shared(m, users, index, f"mul_{i}_")
            index += -(-C // 2)
            shadow.append([_accumulate(m, taps[i + j + 1 + LATENCY], products[j], bits,
                                       f"{i}_{j}", odd_only=True) for j in range(C)])
        terms = {}
        for kind, regs in (("alpha", [a_reg[i][0] for i in range(R)]),
                           ("beta", [b_reg[0][j] for j in range(C)])):
            users = []
            for n, reg in enumerate(regs):
                f = taps[n + 1]
                users.append((f.valid & f.odd, _held(m, reg, f, f"{kind}0_{n}"), reg))
            products = self._shared(m, users, index, f"{kind}_mul")
            index += -(-len(regs) // 2)
            terms[kind] = [_accumulate(m, taps[n + 1 + LATENCY], p, bits, f"{kind}{n}",
                                       odd_only=True) for n, p in enumerate(products)]
        assert index == cfg.array_multipliers
        return shadow, terms["alpha"], terms["beta"]

    def _corrected(self, m: Module, shadow, alpha, beta, row_idx, reading, col_idx):
        """Row ``row_idx`` of the tile, ``shadow[i][j] - alpha[i] - beta[j]``: ``alpha[i]`` goes
        through the read-out tree with its row, ``beta`` is copied when the read-out starts (the
        next tile's terms may be written before its last row is read) and delayed beside the
        tree; then two registered subtractions."""
        cfg = self._cfg
        bits = cfg.acc_bits
        rows = [shadow[i] + [alpha[i]] for i in range(len(shadow))]
        selected, idx, valid = _mux_tree(m, rows, row_idx, reading, bits, col_idx)
        beta_hold = [Signal(signed(bits), name=f"beta_hold{j}") for j in range(cfg.cols)]
        with m.If(reading & (row_idx == 0)):
            m.d.sync += [h.eq(b) for h, b in zip(beta_hold, beta)]
        levels = _tree_levels(cfg.rows)
        beta_d = [delay(m, h, levels - 1, f"beta_d{j}_d") for j, h in enumerate(beta_hold)]
        *values, row_alpha = selected
        less_beta = [register(m, (v - b)[:bits].as_signed(), f"less_beta{j}")
                     for j, (v, b) in enumerate(zip(values, beta_d))]
        alpha_r = register(m, row_alpha, "row_alpha")
        out = [register(m, (v - alpha_r)[:bits].as_signed(), f"corrected{j}")
               for j, v in enumerate(less_beta)]
        return out, delay(m, idx, 2, "corr_idx_d"), delay(m, valid, 2, "corr_valid_d")

    def elaborate(self, platform):
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        m = Module()

        # ---- output FIFO and credits ---------------------------------------------------------
        width = o_layout(cfg).size
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(width=width,
                                                                 depth=cfg.out_fifo_rows)
        m.d.comb += [self.o.valid.eq(out_fifo.r_rdy), self.o.payload.eq(out_fifo.r_data),
                     out_fifo.r_en.eq(self.o.ready)]
        outstanding = Signal(range(cfg.out_fifo_rows + 1))      # rows promised to the FIFO
        in_tile = Signal()
        spacing = cfg.tile_spacing
        since_last = Signal(range(spacing + 1), init=spacing)
        pad = Signal()          # fip: the zero beat that completes an odd-length tile's last pair

        start_ok = outstanding + R <= cfg.out_fifo_rows
        last_ok = since_last >= spacing - 1
        allow = (in_tile | start_ok) & (~self.a.payload.last | last_ok) & ~pad
        fire = Signal()
        m.d.comb += [fire.eq(self.a.valid & self.b.valid & allow),
                     self.a.ready.eq(self.b.valid & allow),
                     self.b.ready.eq(self.a.valid & allow)]
        starting = fire & ~in_tile
        popped = self.o.valid & self.o.ready
        m.d.sync += outstanding.eq(outstanding + Mux(starting, R, 0) - popped)
        with m.If(fire):
            m.d.sync += in_tile.eq(~self.a.payload.last)
        m.d.comb += self.busy.eq(in_tile | (outstanding != 0))

        # ---- beat flags -----------------------------------------------------------------------
        # ``fip``: a product takes a pair of beats (index 2p, 2p + 1 in the tile) and is made on
        # the odd one, whose ``first`` marks the tile's first pair; a tile of odd length gets a
        # zero beat after its last (``pad``), so every tile ends on an odd beat
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1, "odd": 1})
        beat = Signal(flags)
        if self._fip:
            parity = Signal()               # the next beat's index in its tile is odd
            pair0 = Signal(init=1)          # the next odd beat completes the tile's first pair
            pad_first = Signal()
            ends = fire & self.a.payload.last
            m.d.sync += pad.eq(ends & ~parity)
            with m.If(fire):
                m.d.sync += parity.eq(~parity)
                with m.If(parity):
                    m.d.sync += pair0.eq(0)
                with m.If(self.a.payload.last):
                    m.d.sync += [parity.eq(0), pair0.eq(1), pad_first.eq(pair0)]
            m.d.comb += [beat.valid.eq(fire | pad), beat.odd.eq(pad | parity),
                         beat.first.eq(Mux(pad, pad_first, parity & pair0)),
                         beat.last.eq(pad | (ends & parity))]
        else:
            m.d.comb += [beat.valid.eq(fire), beat.first.eq(starting),
                         beat.last.eq(fire & self.a.payload.last)]
        with m.If(beat.last):
            m.d.sync += since_last.eq(0)
        with m.Elif(since_last < spacing):
            m.d.sync += since_last.eq(since_last + 1)

        # ---- skew: row i of A delayed i cycles, column j of B j cycles --------------------------
        # Beat flags are the same for every PE on an anti-diagonal (PE(i, j) sees beat k at
        # k + i + j + 1), so one shared delay line, tapped at i + j, replaces per-PE flag registers.
        flag_taps = [beat]
        for n in range(R + C + LATENCY):
            tap = Signal(flags, name=f"flags_d{n}")
            m.d.sync += tap.eq(flag_taps[-1])
            flag_taps.append(tap)
        # operands are not zeroed on bubbles: accumulators ignore beats whose valid flag is low
        # (the pad beat's are zero: it completes a pair)
        a_in = [delay(m, Mux(pad, 0, self.a.payload.data[i]), i, f"a_skew{i}_d") for i in range(R)]
        b_in = [delay(m, Mux(pad, 0, self.b.payload[j]), j, f"b_skew{j}_d") for j in range(C)]

        # ---- processing elements: operand registers passed right and down ---------------------
        a_reg = [[Signal(signed(cfg.abits), name=f"a_{i}_{j}") for j in range(C)] for i in range(R)]
        b_reg = [[Signal(signed(cfg.wbits), name=f"b_{i}_{j}") for j in range(C)] for i in range(R)]
        for i in range(R):
            for j in range(C):
                m.d.sync += [a_reg[i][j].eq(a_reg[i][j - 1] if j else a_in[i]),
                             b_reg[i][j].eq(b_reg[i - 1][j] if i else b_in[j])]
        # PE(i, j)'s operands hold the beat whose flags are at tap i + j + 1; its product comes
        # LATENCY cycles later
        if self._fip:
            shadow, alpha, beta = self._fip_products(m, a_reg, b_reg, flag_taps)
        else:
            shadow = [[_accumulate(m, flag_taps[i + j + 1 + LATENCY], self._multiply(
                m, a_reg[i][j], b_reg[i][j], i * C + j, f"mul_{i}_{j}"), cfg.acc_bits,
                f"{i}_{j}", odd_only=False) for j in range(C)] for i in range(R)]

        # ---- read-out: row i at T + cols + READ_LATENCY + i ------------------------------------
        # The read schedule is registered: the row index that steers every column's mux comes
        # straight from a flip-flop (a combinational index was the 16x16 critical path).
        # Every column's multiplexers have their own copy of the row index (one counter
        # steering all of them reached across the array: the 8x8 board build's path, 13.7 ns of
        # routing), and so does each level of the tree after it.
        pre = flag_taps[C + READ_LATENCY - 1].last         # one cycle before row 0 is read
        reading = Signal()
        row_idx = Signal(range(max(R, 2)))
        col_idx = [Signal.like(row_idx, name=f"row_idx_replica{j}") for j in range(C + 1)]
        with m.If(pre):
            m.d.sync += [reading.eq(1), row_idx.eq(0), *(c.eq(0) for c in col_idx)]
        with m.Elif(reading):
            with m.If(row_idx == R - 1):
                m.d.sync += reading.eq(0)
            with m.Else():
                m.d.sync += [row_idx.eq(row_idx + 1), *(c.eq(c + 1) for c in col_idx)]

        if self._fip:
            rows_out, idx, valid = self._corrected(m, shadow, alpha, beta, row_idx, reading,
                                                   col_idx)
        else:
            rows_out, idx, valid = _mux_tree(m, shadow, row_idx, reading, cfg.acc_bits,
                                             col_idx[:C])
        is_last = Signal()
        m.d.comb += is_last.eq(idx == R - 1)
        row = Signal(o_layout(cfg))
        m.d.comb += [row.last.eq(is_last)] + [row.data[j].eq(rows_out[j]) for j in range(C)]
        m.d.comb += [out_fifo.w_data.eq(row.as_value()), out_fifo.w_en.eq(valid)]
        return m


def _accumulate(m: Module, f, p, bits: int, name: str, *, odd_only: bool):
    """The shadow register of an accumulator of products ``p`` whose beat flags are ``f``
    (``odd_only``: products are made on odd beats only, ``fip``). Sums wrap at ``bits``: the
    ``fip`` partial sums may exceed them, the corrected result never does."""
    acc = Signal(signed(bits), name=f"acc_{name}")
    sh = Signal(signed(bits), name=f"shadow_{name}")
    total = Mux(f.first, 0, acc) + p
    with m.If(f.valid & f.odd if odd_only else f.valid):
        m.d.sync += acc.eq(total)
        with m.If(f.last):
            m.d.sync += sh.eq(total)
    return sh


def _held(m: Module, value, f, name: str):
    """``value`` as it was on the last even beat (``f``: its flags): the first of a pair."""
    held = Signal.like(value, name=name)
    with m.If(f.valid & ~f.odd):
        m.d.sync += held.eq(value)
    return held


def _tree_levels(rows: int) -> int:
    """Registered levels of :func:`_mux_tree` over ``rows`` rows."""
    levels = 0
    while rows > 1:
        rows, levels = math.ceil(rows / 4), levels + 1
    return max(levels, 1)


def _mux_tree(m: Module, rows, idx, valid, width, col_idx):
    """Pipelined selection of ``rows[idx]`` (a list of per-column values), 4:1 per registered
    level; column ``j`` selects by ``col_idx[j]`` (equal to ``idx`` at all times), and each
    level after the first by its own registered copy. Returns the selected columns, the index
    and the valid bit, all aligned."""
    level = 0
    cands = rows
    while len(cands) > 1:
        lo_bit = 2 * level
        nxt = []
        for g in range(math.ceil(len(cands) / 4)):
            group = cands[4 * g:4 * g + 4]
            regs = [Signal(signed(width), name=f"rd_l{level}_g{g}_c{j}")
                    for j in range(len(group[0]))]
            for j, reg in enumerate(regs):
                sel = col_idx[j][lo_bit:lo_bit + 2]
                m.d.sync += reg.eq(Array(r[j] for r in group)[sel] if len(group) > 1
                                   else group[0][j])
            nxt.append(regs)
        idx_d = Signal.like(idx, name=f"rd_idx_l{level}")
        valid_d = Signal(name=f"rd_valid_l{level}")
        m.d.sync += [idx_d.eq(idx), valid_d.eq(valid)]
        col_idx = [replica(m, c, f"rd_idx_l{level}_c{j}") for j, c in enumerate(col_idx)]
        cands, idx, valid = nxt, idx_d, valid_d
        level += 1
    if level == 0:          # a single row: register once for the same shape of timing
        regs = [Signal(signed(width), name=f"rd_c{j}") for j in range(len(cands[0]))]
        m.d.sync += [r.eq(v) for r, v in zip(regs, cands[0])]
        idx_d, valid_d = Signal.like(idx), Signal()
        m.d.sync += [idx_d.eq(idx), valid_d.eq(valid)]
        return regs, idx_d, valid_d
    return cands[0], idx, valid
