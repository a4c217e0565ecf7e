"""Lower an :class:`~gen.quantize.IntModel` onto an accelerator: instructions, scratchpad
allocation, memory images (see :mod:`hw.isa` for the instruction set and the memory layout).

``compile_model(model, cfg)`` returns a :class:`Program`: the instruction list, the constant
scratchpad image (weights, position table, the class-token row), the requantiser and vector-unit
tables, where the input goes and where the output comes from, and the sizes the hardware needs
(:func:`Program.sizes`). Anything that does not fit raises :class:`CompileError` naming the tensor
or layer and the numbers.

Lowering (per ViT / BERT encoder layer): LayerNorm rows; Q, K, V as three GEMMs; per head
``scores = Q_h K_h^T`` (keys through the transposer), Shiftmax rows, ``ctx_h = P_h V_h`` (values
as direct B rows, written into the head's lanes of ``ctx``); the projection with the residual
add in its requantiser; LayerNorm; fc1; GELU rows; fc2 with its residual. A ViT's patch embedding
adds the position table as the residual and writes rows ``1..`` of a buffer whose row 0 holds the
class token (a constant that is never overwritten); the classifier reads row 0.

Allocation: tensors live from the instruction that writes them to the last that reads them;
first-fit reuse of freed scratchpad ranges (``reuse=False`` keeps every tensor, for debugging a
mismatch layer by layer).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from amaranth.lib import data

from hw.config import AcceleratorConfig
from hw.isa import (
    DIM_BITS,
    HostCmd,
    Opcode,
    Target,
    header_layout,
    instr_layout,
    words_for,
)
from hw.scratchpad import Sizes, check_core, ptab_layout, spad_layout, vtab_layout

from . import unit_params
from .quantize import IntModel

__all__ = ["CompileError", "Program", "Tensor", "compile_model", "pack_entries",
           "write_command", "read_command", "command"]

IDENTITY_REQUANT = {"m": 2, "e": 1, "b": 0, "c": 0}        # (2x + 1) >> 1 == x
BIAS_FRAC_BITS = 16


class CompileError(ValueError):
    """A model that cannot run on the given accelerator (the message says what and by how much)."""


@dataclass
class Tensor:
    name: str
    rows: int
    cols: int
    bits: int
    base: int = -1
    stride: int = 0            # words between column blocks (>= rows)
    pinned: bool = False

    def words(self, V: int) -> int:
        return self.stride * -(-self.cols // V)


@dataclass
class Instr:
    fields: dict
    layer: str                  # golden-trace name of what it produces
    macs: int = 0
    golden: dict = field(default_factory=dict)     # for gen.isasim (op and its constants)


@dataclass
class Program:
    cfg: AcceleratorConfig
    model_mode: str
    instrs: list
    tensors: dict
    spad_init: dict             # base address -> int array [words, V]
    ptab: list                  # entries: list of V lane dicts
    vtab: list                  # entries: {"softmax": ..., "gelu": ...}
    input: str
    output: str
    spad_words: int

    @property
    def macs(self) -> int:
        return sum(i.macs for i in self.instrs)

    def sizes(self) -> Sizes:
        pow2 = 1 << max(4, (self.spad_words - 1).bit_length())
        return Sizes(spad=pow2, imem=max(16, len(self.imem(segmented=True)[0])),
                     ptab=max(16, len(self.ptab)), vtab=max(1, len(self.vtab)))

    # host command words --------------------------------------------------------------------
    # file ------------------------------------------------------------------------------------
    FORMAT = "dyad-program-1"

    def save(self, path) -> Path:
        """``<path>`` as JSON: config, instructions, tables, constant image, tensor map."""
        def plain(v):
            if isinstance(v, Opcode):
                return v.name
            if isinstance(v, (np.integer,)):
                return int(v)
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            return v
        doc = {"format": self.FORMAT, "config": self.cfg.to_dict(), "mode": self.model_mode,
               "sizes": asdict(self.sizes()), "input": self.input, "output": self.output,
               "spad_words": self.spad_words, "macs": self.macs,
               "tensors": {n: asdict(t) for n, t in self.tensors.items()},
               "instrs": [{"layer": i.layer, "macs": i.macs, "fields": plain(i.fields),
                           "golden": plain(i.golden)} for i in self.instrs],
               "ptab": self.ptab, "vtab": plain(self.vtab),
               "spad_init": {str(k): plain(v) for k, v in self.spad_init.items()}}
        path = Path(path)
        path.write_text(json.dumps(doc) + "\n")
        return path

    @classmethod
    def load(cls, path) -> "Program":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"program file not found: {path}")
        doc = json.loads(path.read_text())
        if doc.get("format") != cls.FORMAT:
            raise ValueError(f"{path}: not a Dyad program (format {doc.get('format')!r})")
        instrs = []
        for i in doc["instrs"]:
            f = dict(i["fields"])
            f["op"] = Opcode[f["op"]]
            instrs.append(Instr(f, i["layer"], i["macs"], i["golden"]))
        return cls(AcceleratorConfig.from_dict(doc["config"]), doc["mode"], instrs,
                   {n: Tensor(**t) for n, t in doc["tensors"].items()},
                   {int(k): np.asarray(v, np.int64) for k, v in doc["spad_init"].items()},
                   doc["ptab"], doc["vtab"], doc["input"], doc["output"], doc["spad_words"])

    def segments(self) -> list[tuple[str, int, int]]:
        """``(layer, first instruction, count)``: the program cut at layer boundaries
        (``embed``, ``layers.<i>``, ``final_ln``, ``head``)."""
        out = []
        for n, ins in enumerate(self.instrs):
            name = ins.layer
            seg = ".".join(name.split(".")[:2]) if name.startswith("layers.") else (
                "head" if name == "logits" else name.split(".")[0])
            if out and out[-1][0] == seg:
                out[-1][2] += 1
            else:
                out.append([seg, n, 1])
        return [tuple(s) for s in out]

    def imem(self, segmented: bool = False) -> tuple[list, list[int]]:
        """Instruction memory entries and the ``RUN`` addresses: one program ending in ``END``,
        or (``segmented``) one ``END`` after every layer, to time layers one ``RUN`` each."""
        entries, starts = [], []
        for _, first, count in (self.segments() if segmented else
                                [("all", 0, len(self.instrs))]):
            starts.append(len(entries))
            entries += [i.fields for i in self.instrs[first:first + count]]
            entries.append({"op": Opcode.END})
        return entries, starts

    def load_commands(self, segmented: bool = False) -> list[list[int]]:
        """WRITE commands (one word list each) for everything that is constant across
        inferences."""
        cfg = self.cfg
        cmds = [write_command(Target.SPAD, spad_layout(cfg), base, [list(r) for r in block])
                for base, block in sorted(self.spad_init.items())]
        cmds.append(write_command(Target.IMEM, instr_layout, 0, self.imem(segmented)[0]))
        cmds.append(write_command(Target.PTAB, ptab_layout(cfg), 0, self.ptab))
        if self.vtab:
            cmds.append(write_command(Target.VTAB, vtab_layout(cfg), 0, self.vtab))
        return cmds

    def input_commands(self, x: np.ndarray) -> list[int]:
        """WRITE of one input (``[rows, cols]`` integers) into the input tensor."""
        return write_command(Target.SPAD, spad_layout(self.cfg), self.tensors[self.input].base,
                             self.to_words(self.input, x))

    def output_command(self) -> list[int]:
        t = self.tensors[self.output]
        return read_command(Target.SPAD, t.base, t.words(self.cfg.cols))

    def tensor_command(self, name: str) -> list[int]:
        """READ of a whole tensor (its blocked words)."""
        t = self.tensors[name]
        return read_command(Target.SPAD, t.base, t.words(self.cfg.cols))

    def reply_words(self, name: str) -> int:
        """Host words a :meth:`tensor_command` returns."""
        return self.tensors[name].words(self.cfg.cols) * words_for(spad_layout(self.cfg).size)

    def decode(self, name: str, reply: list[int]) -> np.ndarray:
        """A tensor from the words a :meth:`tensor_command` returned."""
        layout = spad_layout(self.cfg)
        n = words_for(layout.size)
        if len(reply) != self.reply_words(name):
            raise ValueError(f"{name}: expected {self.reply_words(name)} words, got {len(reply)}")
        rows = []
        for i in range(0, len(reply), n):
            bits = sum(w << (32 * k) for k, w in enumerate(reply[i:i + n]))
            rows.append(data_const(layout, bits))
        return self.from_words(name, np.asarray(rows, np.int64))

    def to_words(self, name: str, x: np.ndarray) -> list:
        """A tensor's values as scratchpad words (blocked layout, zero padding)."""
        t, V = self.tensors[name], self.cfg.cols
        x = np.asarray(x, np.int64)
        if x.shape != (t.rows, t.cols):
            raise ValueError(f"{name}: expected shape {(t.rows, t.cols)}, got {x.shape}")
        return [list(r) for r in _blocked(x, t.stride, V)]

    def from_words(self, name: str, words: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_words` (``words``: ``[t.words(V), V]``)."""
        t, V = self.tensors[name], self.cfg.cols
        nb = -(-t.cols // V)
        w = np.asarray(words, np.int64).reshape(nb, t.stride, V)[:, :t.rows]
        return w.transpose(1, 0, 2).reshape(t.rows, nb * V)[:, :t.cols]


def _blocked(x: np.ndarray, stride: int, V: int) -> np.ndarray:
    rows, cols = x.shape
    nb = -(-cols // V)
    out = np.zeros((nb, stride, V), np.int64)
    pad = np.zeros((rows, nb * V), np.int64)
    pad[:, :cols] = x
    out[:, :rows] = pad.reshape(rows, nb, V).transpose(1, 0, 2)
    return out.reshape(nb * stride, V)


def data_const(layout, bits: int) -> list[int]:
    """An ``ArrayLayout`` entry's elements from its bits."""
    c = data.Const(layout, bits)
    return [int(c[i]) for i in range(layout.length)]


def pack_entries(layout, values: list) -> list[int]:
    """Entries (``layout.const`` initialisers) as little-endian 32-bit host words."""
    n = words_for(layout.size)
    out = []
    for v in values:
        bits = layout.const(v).as_value().value & ((1 << layout.size) - 1)
        out += [(bits >> (32 * k)) & 0xFFFFFFFF for k in range(n)]
    return out


def _header(cmd: HostCmd, target: Target, count: int) -> int:
    return header_layout.const({"cmd": cmd, "target": target, "count": count}).as_value().value


def write_command(target: Target, layout, addr: int, values: list) -> list[int]:
    """A WRITE of ``values`` (entries of ``layout``) to consecutive addresses from ``addr``."""
    return [_header(HostCmd.WRITE, target, len(values)), addr] + pack_entries(layout, values)


def read_command(target: Target, addr: int, count: int) -> list[int]:
    return [_header(HostCmd.READ, target, count), addr]


def command(cmd: HostCmd, addr: int = 0) -> list[int]:
    return [_header(cmd, Target.SPAD, 0), addr]


def split_command(words: list[int], entry_words: dict, max_request: int,
                  max_reply: int) -> list[list[int]]:
    """A WRITE or READ cut into commands of at most ``max_request`` request bytes and
    ``max_reply`` reply bytes (``entry_words``: host words per entry of each target)."""
    hdr = header_layout.from_bits(words[0])
    cmd, target, count = HostCmd(hdr.cmd), Target(hdr.target), int(hdr.count)
    n = entry_words[target]
    if cmd == HostCmd.WRITE:
        per = (max_request - 8) // (4 * n)
    elif cmd == HostCmd.READ:
        per = max_reply // (4 * n)
    else:
        return [list(words)]
    if per < 1:
        raise ValueError(f"one {target.name} entry ({4 * n} bytes) exceeds the link's "
                         f"{max_request if cmd == HostCmd.WRITE else max_reply}-byte limit")
    out = []
    for first in range(0, max(count, 1), per):
        k = min(per, count - first)
        data = words[2 + first * n:2 + (first + k) * n] if cmd == HostCmd.WRITE else []
        out.append([_header(cmd, target, k), words[1] + first] + list(data))
    return out


# --------------------------------------------------------------------------------------------------
# lowering

Ref = tuple     # (tensor name, word offset): an address resolved after allocation


class _Lower:
    def __init__(self, model: IntModel, cfg: AcceleratorConfig):
        try:
            check_core(cfg)
        except ValueError as exc:
            raise CompileError(str(exc)) from None
        if model.mode != cfg.mode:
            raise CompileError(f"model is quantised for mode {model.mode!r}, the accelerator "
                               f"is built for {cfg.mode!r}")
        self.im, self.cfg, self.V = model, cfg, cfg.cols
        self.T = model.tensors
        self.tensors: dict[str, Tensor] = {}
        self.instrs: list[Instr] = []
        self.ptab: list = []
        self.vtab: list = []
        self.consts: dict[str, np.ndarray] = {}      # name -> words (pinned, loaded once)
        self.const_rows: list = []                   # (tensor, row, values) loaded once

    # tensors ---------------------------------------------------------------------------------
    def act(self, name: str, rows: int, cols: int, bits: int | None = None, *,
            pinned: bool = False) -> Tensor:
        t = Tensor(name, rows, cols, bits or self.im.bits[name], stride=rows, pinned=pinned)
        self.tensors[name] = t
        return t

    def const(self, name: str, x: np.ndarray, bits: int) -> Tensor:
        x = np.asarray(x, np.int64)
        t = self.act(name, x.shape[0], x.shape[1], bits, pinned=True)
        self.consts[name] = _blocked(x, t.stride, self.V)
        return t

    def weights(self, lin: str) -> Tensor:
        """``W[N, K]`` stored as the B operand: tensor ``W^T`` (rows K, columns N)."""
        return self.const(lin + ".w", self.T[lin + ".w"].T, self.im.wbits)

    # tables ----------------------------------------------------------------------------------
    def params(self, n: int, m, e, *, b=None, c=None) -> int:
        """Requantiser entries for ``n`` channels (scalars broadcast); returns the first index."""
        V, mb = self.V, self.cfg.mbits
        m = np.broadcast_to(np.asarray(m, np.int64), (n,))
        e = np.broadcast_to(np.asarray(e, np.int64), (n,))
        b = np.zeros(n, np.int64) if b is None else np.broadcast_to(np.asarray(b, np.int64), (n,))
        c = np.zeros(n, np.int64) if c is None else np.broadcast_to(np.asarray(c, np.int64), (n,))
        if np.abs(m).max(initial=0) >= 1 << mb:
            raise CompileError(f"requant multiplier {int(np.abs(m).max())} needs more than the "
                               f"accelerator's {mb} mantissa bits (quantise with mbits={mb})")
        first = len(self.ptab)
        for blk in range(-(-n // V)):
            lanes = []
            for j in range(V):
                ch = blk * V + j
                lanes.append({"m": int(m[ch]), "e": int(e[ch]), "b": int(b[ch]),
                              "c": int(c[ch])} if ch < n else {"m": 0, "e": 1, "b": 0, "c": 0})
            self.ptab.append(lanes)
        return first

    def requant_params(self, out: str, n: int, bias=None) -> int:
        T = self.T
        m, e = T[out + ".m"], T[out + ".e"]
        c = None
        if out in self.im.folded:
            c = T[out + ".bias"] >> (e - BIAS_FRAC_BITS)
        elif out + ".ln_bias" in T:
            bias = T[out + ".ln_bias"]
        return self.params(n, m, e, b=bias, c=c)

    # instructions ----------------------------------------------------------------------------
    def _check_dims(self, layer: str, **dims):
        for k, v in dims.items():
            if not 0 <= v < 1 << DIM_BITS:
                raise CompileError(f"{layer}: {k} = {v} exceeds the instruction field "
                                   f"({(1 << DIM_BITS) - 1})")

    def gemm(self, layer: str, out: str, a: str, b: str, *, m: int, n: int, k: int,
             p_index: int, a_col: int = 0, a_row: int = 0, b_col: int = 0,
             b_trans: bool = False,
             o_row: int = 0, o_col: int = 0, res: str | None = None, rm: int = 0, re: int = 0,
             golden: dict | None = None):
        cfg, V, ts = self.cfg, self.V, self.tensors
        A, B, O = ts[a], ts[b], ts[out]
        self._check_dims(layer, m=m, n=n, k=k)
        if k > cfg.kmax:
            raise CompileError(f"{layer}: K = {k} exceeds the array's kmax = {cfg.kmax}")
        if A.bits > cfg.abits:
            raise CompileError(f"{layer}: A operand {a} is {A.bits}-bit, the array takes "
                               f"{cfg.abits}-bit activations (build with --act-bits {A.bits})")
        if B.bits > cfg.wbits:
            raise CompileError(f"{layer}: B operand {b} is {B.bits}-bit, the array takes "
                               f"{cfg.wbits}-bit weights")
        if not b_trans and b_col % V and b_col % V + n > V:
            raise CompileError(f"{layer}: a {n}-column slice at column {b_col} straddles "
                               f"{V}-lane words")
        if o_col % V and o_col % V + n > V:
            raise CompileError(f"{layer}: a {n}-column output slice at column {o_col} "
                               f"straddles {V}-lane words")
        f = {"op": Opcode.GEMM, "wide": int(O.bits == 16), "residual": int(res is not None),
             "b_trans": int(b_trans), "m": m, "n": n, "k": k,
             "a_base": (a, (a_col // V) * A.stride + a_row), "a_stride": A.stride,
             "a_col": a_col % V,
             "b_base": (b, (b_col // V) * B.stride), "b_stride": B.stride, "b_col": b_col % V,
             "o_base": (out, (o_col // V) * O.stride + o_row), "o_stride": O.stride,
             "o_lane": o_col % V, "p_index": p_index, "rm": int(rm), "re": int(re)}
        if res is not None:
            f["r_base"], f["r_stride"] = (res, 0), ts[res].stride
        reads = [a, b] + ([res] if res else [])
        self.instrs.append(Instr(f, layer, macs=m * n * k,
                                 golden={"reads": reads, "writes": out, **(golden or {})}))

    def rows_op(self, op: Opcode, layer: str, out: str, src: str, *, p_index: int,
                v_index: int = 0, golden: dict):
        ts = self.tensors
        S, O = ts[src], ts[out]
        limit = self.cfg.max_channels if op == Opcode.LAYERNORM else self.cfg.max_row
        if op != Opcode.GELU or self.cfg.mode == "ivit":
            if S.cols > limit:
                raise CompileError(f"{layer}: rows of {S.cols} exceed the unit's buffer "
                                   f"({limit}; raise max_row / max_channels)")
        self._check_dims(layer, m=S.rows, n=S.cols)
        f = {"op": op, "wide": int(O.bits == 16), "m": S.rows, "n": S.cols,
             "a_base": (src, 0), "a_stride": S.stride, "o_base": (out, 0),
             "o_stride": O.stride, "p_index": p_index, "v_index": v_index}
        self.instrs.append(Instr(f, layer, golden={"reads": [src], "writes": out, **golden}))

    def layernorm(self, src: str, out: str):
        s = self.tensors[src]
        self.act(out, s.rows, s.cols)
        p = self.requant_params(out, s.cols)
        self.rows_op(Opcode.LAYERNORM, out, out, src, p_index=p,
                     golden={"fn": "layernorm", "mode": self.im.mode})

    def linear(self, lin: str, src: str, out: str, *, res: str | None = None,
               rows: int | None = None, o_row: int = 0, out_rows: int | None = None):
        s = self.tensors[src]
        W = self.T[lin + ".w"]
        n, k = W.shape
        m = s.rows if rows is None else rows
        if out not in self.tensors:
            self.act(out, out_rows or m, n)
        self.weights(lin)
        p = self.requant_params(out, n, bias=self.T[lin + ".b"])
        rm = re = 0
        if res is not None:
            rm, re = int(self.T[out + ".res_m"]), int(self.T[out + ".res_e"])
            if abs(rm) >= 1 << 31:
                raise CompileError(f"{out}: residual multiplier does not fit 32 bits")
        self.gemm(lin, out, src, lin + ".w", m=m, n=n, k=k, p_index=p, res=res, rm=rm, re=re,
                  o_row=o_row)

    # model -----------------------------------------------------------------------------------
    def vit(self):
        s, T = self.im.spec, self.T
        self.act("input", s.num_patches, s.patch_dim)
        self.act("embed", s.tokens, s.dim, pinned=True)      # row 0: the class token, constant
        self.const_rows.append(("embed", 0, T["embed.cls"]))
        self.const("embed.pos", T["embed.pos"], 16)
        self.linear("embed.patch", "input", "embed", res="embed.pos", o_row=1)
        self.instrs[-1].golden["rows_from"] = 1
        x = "embed"
        for i in range(s.depth):
            x = self.layer(f"layers.{i}.", x)
        self.layernorm(x, "final_ln")
        self.linear("head", "final_ln", "logits", rows=1)
        return "input", "logits"

    def bert(self):
        s = self.im.spec
        self.act("embed", s.seq_len, s.dim)
        self.layernorm("embed", "embed_ln")
        x = "embed_ln"
        for i in range(s.depth):
            x = self.layer(f"layers.{i}.", x)
        out = x
        if s.num_classes:
            self.linear("head", x, "logits", rows=1)
            out = "logits"
        return "embed", out

    def layer(self, p: str, x: str) -> str:
        s, im, T = self.im.spec, self.im, self.T
        rows, hd = self.tensors[x].rows, s.head_dim
        a_in = x
        if s.pre_ln:
            self.layernorm(x, p + "ln1")
            a_in = p + "ln1"
        for n in ("q", "k", "v"):
            self.linear(p + n, a_in, p + n)
        v_index = self.vector_constants(p, rows)
        self.act(p + "ctx", rows, s.dim)
        p_scores = self.params(rows, T[p + "scores.m"], T[p + "scores.e"])
        p_probs = self.params(rows, IDENTITY_REQUANT["m"], IDENTITY_REQUANT["e"])
        p_ctx = self.params(hd, T[p + "ctx.m"], T[p + "ctx.e"])
        # all heads' scores and probabilities in one tensor each (head h at rows h * rows), so one
        # SOFTMAX instruction keeps the row units busy across heads
        sc, pr = p + "scores", p + "probs"
        self.act(sc, s.heads * rows, rows)
        self.act(pr, s.heads * rows, rows)
        for h in range(s.heads):
            self.gemm(f"{sc}.h{h}", sc, p + "q", p + "k", m=rows, n=rows, k=hd,
                      p_index=p_scores, a_col=h * hd, b_col=h * hd, b_trans=True,
                      o_row=h * rows)
        self.rows_op(Opcode.SOFTMAX, pr, pr, sc, p_index=p_probs, v_index=v_index,
                     golden={"fn": "softmax", "scale": im.scales[sc],
                             "out_bits": im.bits[pr], "mode": im.mode})
        for h in range(s.heads):
            self.gemm(f"{p}ctx.h{h}", p + "ctx", pr, p + "v", m=rows, n=hd, k=rows,
                      p_index=p_ctx, a_row=h * rows, b_col=h * hd, o_col=h * hd)
        self.linear(p + "proj", p + "ctx", p + "attn_res", res=x)
        if s.pre_ln:
            self.layernorm(p + "attn_res", p + "ln2")
            m_in, res = p + "ln2", p + "attn_res"
        else:
            self.layernorm(p + "attn_res", p + "ln1")
            m_in = res = p + "ln1"
        self.linear(p + "fc1", m_in, p + "fc1")
        self.act(p + "gelu", rows, s.mlp_dim)
        pg = self.params(s.mlp_dim, T[p + "gelu.m"], T[p + "gelu.e"])
        self.rows_op(Opcode.GELU, p + "gelu", p + "gelu", p + "fc1", p_index=pg,
                     v_index=v_index, golden={"fn": "gelu", "scale": im.scales[p + "fc1"],
                                              "in_bits": im.bits[p + "fc1"], "mode": im.mode})
        self.linear(p + "fc2", p + "gelu", p + "mlp_res", res=res)
        if s.pre_ln:
            return p + "mlp_res"
        self.layernorm(p + "mlp_res", p + "ln2")
        return p + "ln2"

    def vector_constants(self, p: str, rows: int) -> int:
        """The layer's Shiftmax and GELU constants as one vector-table entry."""
        im = self.im
        try:
            smx = unit_params.shiftmax(im.mode, im.scales[p + "scores"], rows,
                                       im.bits[p + "probs"])
            if im.mode == "ivit":
                gelu = unit_params.shiftgelu(im.scales[p + "fc1"])
            else:
                gelu = unit_params.gelu(im.scales[p + "fc1"], im.bits[p + "fc1"])
        except ValueError as exc:
            raise CompileError(f"{p.rstrip('.')}: {exc}") from None
        self.vtab.append({"softmax": smx, "gelu": gelu})
        return len(self.vtab) - 1

    def chain(self):
        """Mark GEMMs whose successor may start while they drain: the next is a GEMM that does
        not read this one's output, and this one reads no residual (the drain reads it late)."""
        for a, b in zip(self.instrs, self.instrs[1:]):
            f = a.fields
            if (f["op"] == Opcode.GEMM and b.fields["op"] == Opcode.GEMM
                    and not f.get("residual") and a.golden["writes"] not in b.golden["reads"]):
                f["chain"] = 1

    # allocation ------------------------------------------------------------------------------
    def allocate(self, reuse: bool) -> int:
        first, last = {}, {}
        for n, ins in enumerate(self.instrs):
            for r in ins.golden["reads"]:
                last[r] = n
            w = ins.golden["writes"]
            first.setdefault(w, n)
            last[w] = max(last.get(w, n), n)
        free: list[list[int]] = []          # [start, size], sorted
        top = 0

        def alloc(size):
            nonlocal top
            for blk in free:
                if blk[1] >= size:
                    start = blk[0]
                    blk[0] += size
                    blk[1] -= size
                    if blk[1] == 0:
                        free.remove(blk)
                    return start
            start, top = top, top + size
            return start

        def release(start, size):
            free.append([start, size])
            free.sort()
            merged = []
            for b in free:
                if merged and merged[-1][0] + merged[-1][1] == b[0]:
                    merged[-1][1] += b[1]
                else:
                    merged.append(b)
            free[:] = merged

        V = self.V
        for t in self.tensors.values():            # constants and pinned tensors first
            if t.pinned or t.name == self.input:
                t.base = alloc(t.words(V))
        for n in range(len(self.instrs)):
            w = self.instrs[n].golden["writes"]
            t = self.tensors[w]
            if t.base < 0 and first.get(w) == n:
                t.base = alloc(t.words(V))
            if reuse:
                for name, end in last.items():
                    tt = self.tensors[name]
                    if end == n and not tt.pinned and name not in (self.input, self.output):
                        release(tt.base, tt.words(V))
        return top

    def resolve(self):
        for ins in self.instrs:
            for k, v in list(ins.fields.items()):
                if isinstance(v, tuple):
                    name, off = v
                    ins.fields[k] = self.tensors[name].base + off
                    if ins.fields[k] >= 1 << 16:
                        raise CompileError(f"{ins.layer}: address {ins.fields[k]} beyond the "
                                           f"16-bit scratchpad address space")


def compile_model(model: IntModel, cfg: AcceleratorConfig, *, reuse: bool = True,
                  sizes: Sizes | None = None) -> Program:
    """Lower ``model`` for ``cfg``. With ``sizes`` (an existing build), refuse a program that
    does not fit its memories."""
    lw = _Lower(model, cfg)
    inp, out = lw.vit() if model.spec.kind == "vit" else lw.bert()
    lw.input, lw.output = inp, out
    lw.chain()
    words = lw.allocate(reuse)
    lw.resolve()
    V = cfg.cols
    spad_init = {}
    for name, block in lw.consts.items():
        spad_init[lw.tensors[name].base] = block
    for name, row, values in lw.const_rows:
        t = lw.tensors[name]
        blocks = _blocked(np.asarray(values, np.int64)[None, :], 1, V)
        for b in range(blocks.shape[0]):
            spad_init[t.base + b * t.stride + row] = blocks[b:b + 1]
    prog = Program(cfg, model.mode, lw.instrs, lw.tensors, spad_init, lw.ptab, lw.vtab, inp,
                   out, words)
    if sizes is not None:
        used = {"spad": words, "imem": len(lw.instrs) + 1, "ptab": len(lw.ptab),
                "vtab": len(lw.vtab)}
        for f, n in used.items():
            have = getattr(sizes, f)
            if n > have:
                raise CompileError(f"{f}: the program needs {n} entries, the accelerator has "
                                   f"{have} ({n - have} short)")
    return prog


def golden_tensors(prog: Program, trace: dict, b: int = 0) -> dict:
    """The golden trace (:func:`gen.golden.run`, batch item ``b``) under the program's tensor
    names (per-head tensors ``<name>.h<i>`` are slices of the golden ``<name>``)."""
    out = {}
    for name, t in prog.tensors.items():
        base, _, head = name.rpartition(".h")
        if name in trace:
            v = np.asarray(trace[name])[b]
        elif head.isdigit() and base in trace:
            v = np.asarray(trace[base])[b, int(head)]
        else:
            continue
        out[name] = v.reshape(t.rows, t.cols) if v.size == t.rows * t.cols else v
    return out


def golden_io(model: IntModel, prog: Program, inputs) -> tuple[list, np.ndarray]:
    """For each model input (a ViT's integer patches, a BERT's token ids): what the program's
    input tensor holds (BERT: the embedding the host gathers), and the golden output."""
    from . import golden
    xs, outs = [], []
    for b in range(len(inputs)):
        trace = {}
        outs.append(golden.run(model, inputs[b:b + 1], trace=trace)[0])
        xs.append(golden_tensors(prog, trace)[prog.input] if model.spec.kind == "bert"
                  else np.asarray(inputs[b]))
    return xs, np.asarray(outs)


def policy_for(cfg: AcceleratorConfig, policy=None):
    """The activation policy a model needs to run on ``cfg``: attention probabilities no wider
    than the array's activations (16-bit probabilities need ``abits = 16``)."""
    from .quantize import PROBS_BITS, ActPolicy
    policy = policy or ActPolicy()
    if cfg.abits < PROBS_BITS and "probs" not in policy.overrides:
        return ActPolicy({**policy.overrides, "probs": cfg.abits})
    return policy
