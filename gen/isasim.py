"""Instruction-level model of the accelerator: executes a :class:`~gen.compiler.Program` on a
numpy scratchpad with the hardware's semantics (operand truncation to the array's widths, the
requantiser's rounding and clamp, lane rotation, write masks), the vector units' functions taken
from :mod:`gen.intops`.

It separates compiler bugs from gateware bugs: ``golden == isasim`` checks the lowering (fast, no
simulator), ``isasim == RTL`` checks the hardware. ``run`` also returns every tensor by name.
"""
from __future__ import annotations

import numpy as np

from hw.isa import Opcode

from . import intops
from .compiler import Program

__all__ = ["Machine", "run"]


def _wrap(x, bits):
    x = np.asarray(x, np.int64)
    half = 1 << (bits - 1)
    return ((x + half) & ((1 << bits) - 1)) - half


def _rshift_round(v, e):
    """``((v >> (e - 1)) + 1) >> 1`` elementwise, Python integers (products exceed 64 bits)."""
    return ((v >> (e - 1)) + 1) >> 1


class Machine:
    def __init__(self, prog: Program):
        self.p, self.cfg, self.V = prog, prog.cfg, prog.cfg.cols
        self.spad = np.zeros((prog.sizes().spad, self.V), np.int64)
        for base, block in prog.spad_init.items():
            self.spad[base:base + len(block)] = block

    def write_tensor(self, name, x):
        t = self.p.tensors[name]
        self.spad[t.base:t.base + t.words(self.V)] = np.asarray(self.p.to_words(name, x))

    def read_tensor(self, name):
        t = self.p.tensors[name]
        return self.p.from_words(name, self.spad[t.base:t.base + t.words(self.V)])

    # ------------------------------------------------------------------------------------------
    def requant(self, x, p_index, rows, ncols, f, residual=None):
        """x: [rows, ncols] raw values -> clamped outputs, per channel from the table."""
        V = self.V
        out = np.zeros((rows, ncols), np.int64)
        for n in range(ncols):
            lane = self.p.ptab[p_index + n // V][n % V]
            m, e, b, c = lane["m"], lane["e"], lane["b"], lane["c"]
            for t in range(rows):
                v = (int(x[t, n]) + b) * m + (c << (e - 16) if c else 0)
                y = _rshift_round(v, e)
                if residual is not None:
                    y += _rshift_round(int(residual[t, n]) * f["rm"], f["re"])
                out[t, n] = y
        hi = (1 << 15) - 1 if f["wide"] else 127
        return np.clip(out, -hi - 1, hi)

    def write(self, f, y, rows, ncols, o_lane=0):
        V = self.V
        for t in range(rows):
            for n in range(ncols):
                addr = f["o_base"] + (n // V) * f["o_stride"] + t
                self.spad[addr, (n % V + o_lane) % V] = y[t, n]

    def gemm(self, f):
        cfg, V = self.cfg, self.V
        M, N, K = f["m"], f["n"], f["k"]
        kk = f["a_col"] + np.arange(K)
        rows = np.arange(M)
        A = self.spad[f["a_base"] + (kk // V)[None, :] * f["a_stride"] + rows[:, None],
                      (kk % V)[None, :]]
        nn = np.arange(N)
        if f.get("b_trans"):
            kb = f["b_col"] + np.arange(K)
            B = self.spad[f["b_base"] + (kb // V)[:, None] * f["b_stride"] + nn[None, :],
                          (kb % V)[:, None]]
        else:
            B = self.spad[f["b_base"] + (nn // V)[None, :] * f["b_stride"]
                          + np.arange(K)[:, None], ((nn % V + f["b_col"]) % V)[None, :]]
        acc = _wrap(A, cfg.abits) @ _wrap(B, cfg.wbits)
        res = None
        if f.get("residual"):
            res = self.spad[f["r_base"] + (nn // V)[None, :] * f["r_stride"] + rows[:, None],
                            (nn % V)[None, :]]
        y = self.requant(acc, f["p_index"], M, N, f, res)
        self.write(f, y, M, N, f["o_lane"])

    def rows_op(self, f, g):
        V = self.V
        M, N = f["m"], f["n"]
        cols = np.arange(N)
        x = self.spad[f["a_base"] + (cols // V)[None, :] * f["a_stride"]
                      + np.arange(M)[:, None], (cols % V)[None, :]]
        if g["fn"] == "softmax":
            raw, _ = intops.shiftmax(x, g["scale"], out_bits=g["out_bits"], mode=g["mode"])
        elif g["fn"] == "layernorm":
            raw, _ = intops.layernorm_normalize(x, mode=g["mode"])
        elif g["mode"] == "ivit":
            raw, _ = intops.shift_gelu(x, g["scale"], mode="ivit")
        else:
            raw, _ = intops.gelu_poly(x, g["scale"], in_bits=g["in_bits"])
        self.write(f, self.requant(raw, f["p_index"], M, N, f), M, N)

    def execute(self, trace: dict | None = None):
        for ins in self.p.instrs:
            f = {"o_lane": 0, "a_col": 0, "b_col": 0, "rm": 0, "re": 0, **ins.fields}
            if f["op"] == Opcode.GEMM:
                self.gemm(f)
            else:
                self.rows_op(f, ins.golden)
            if trace is not None:
                trace[ins.golden["writes"]] = self.read_tensor(ins.golden["writes"])


def run(prog: Program, x: np.ndarray, trace: dict | None = None) -> np.ndarray:
    """Execute ``prog`` on one input (``[rows, cols]`` of the input tensor)."""
    mc = Machine(prog)
    mc.write_tensor(prog.input, x)
    mc.execute(trace)
    return mc.read_tensor(prog.output)
