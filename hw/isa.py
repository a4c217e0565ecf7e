"""The instruction set and the host command words: the one definition shared by the controller
(decodes), the compiler (encodes) and the host runtime (packs).

Memory model. The scratchpad holds words of ``V`` signed 16-bit elements (``V = cols = rows =
lanes``). A tensor ``X[T, C]`` is stored *blocked row-major*: element ``X[t, c]`` is lane
``c % V`` of word ``base + (c // V) * stride + t`` (``stride >= T``). Weights (B operands of
linear layers) are stored the same way with ``T = K``: word ``base + (n // V) * K + k`` holds
``W[n .. n + V, k]``.

Instructions:

``GEMM``   ``O[m, n] = requant(sum_k A[m, a_col + k] * B[k, n])`` for ``m < M``, ``n < N``,
           ``k < K``. A is read column by column through a transposer (``V`` words per block of
           ``V`` columns). B is either another activation read the same way (``b_trans``: ``B[k,
           n] = Y[n, b_col + k]``, e.g. keys for ``Q K^T``) or direct rows (``B[k, n]`` = lane
           ``(n % V) + b_col`` of word ``b_base + (n // V) * b_stride + k``: weights, values).
           The requantizer takes per-channel ``(m, e, bias, c)`` from parameter-table entry
           ``p_index + n // V`` and, with ``residual``, adds ``round(R[m, n] * rm / 2^re)``.
           Output lanes are rotated up by ``o_lane`` (one head's slice of a wider tensor).
``SOFTMAX`` / ``GELU`` / ``LAYERNORM``  row operations: ``M`` rows of ``N`` elements of A, through
           the unit, then the requantizer (parameter entry ``p_index + block``), into O. The unit's
           run-time constants come from vector-table entry ``v_index``.
``END``    stop; the controller reports done.

Instructions complete in order. ``chain`` (set by the compiler on a GEMM followed by a GEMM that
does not read its output) lets the next instruction start as soon as this one's operands have been
read, while its last tiles still drain: the array and the drain take the two back to back.
"""
from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import crc, data, enum

__all__ = ["Opcode", "Target", "READABLE", "HostCmd", "instr_layout", "ptab_lane_layout",
           "ELEM_BITS", "ADDR_BITS", "DIM_BITS", "WORD_BITS", "header_layout", "status_layout",
           "PERF_COUNTERS", "STATUS_WORDS", "STATUS_OK", "words_for",
           "FRAME_SYNC", "FRAME_OVERHEAD", "FRAME_CRC", "frame_header_layout", "Reply", "Nak"]

ELEM_BITS = 16          # scratchpad element width
ADDR_BITS = 16          # scratchpad / table word addresses
DIM_BITS = 12           # M, N, K, column offsets (up to 4095)
WORD_BITS = 32          # host command stream word


class Opcode(enum.Enum, shape=4):
    END = 0
    GEMM = 1
    SOFTMAX = 2
    GELU = 3
    LAYERNORM = 4


instr_layout = data.StructLayout({
    "op": Opcode,
    "wide": 1,          # 16-bit output (else 8-bit clamp)
    "residual": 1,      # GEMM: add the requantised residual R
    "b_trans": 1,       # GEMM: B read through the transposer
    "chain": 1,         # the next instruction may start once this one's operands are read
    "m": unsigned(DIM_BITS), "n": unsigned(DIM_BITS), "k": unsigned(DIM_BITS),
    "a_base": unsigned(ADDR_BITS), "a_stride": unsigned(ADDR_BITS), "a_col": unsigned(DIM_BITS),
    "b_base": unsigned(ADDR_BITS), "b_stride": unsigned(ADDR_BITS), "b_col": unsigned(DIM_BITS),
    "r_base": unsigned(ADDR_BITS), "r_stride": unsigned(ADDR_BITS),
    "o_base": unsigned(ADDR_BITS), "o_stride": unsigned(ADDR_BITS), "o_lane": unsigned(8),
    "p_index": unsigned(ADDR_BITS), "v_index": unsigned(8),
    "rm": signed(32), "re": unsigned(6),
})


def ptab_lane_layout(mbits: int) -> data.StructLayout:
    """One output channel's requantisation: ``y = round((x + b) * m + (c << (e - 16)), e)``,
    padded to whole host words (the accelerator stores an entry's lanes in groups, one group per
    requantiser pass, each written by the host word by word)."""
    fields = {"m": signed(mbits + 1), "e": unsigned(6), "b": signed(32), "c": signed(32)}
    used = sum(shape.width for shape in fields.values())
    return data.StructLayout({**fields, "pad": unsigned(-used % WORD_BITS)})


class Target(enum.Enum, shape=4):
    """Memories the host writes; of them it reads back only :data:`READABLE`."""
    SPAD = 0        # scratchpad words
    IMEM = 1        # instructions
    PTAB = 2        # requantiser parameter entries (V lanes each)
    VTAB = 3        # vector-unit constants (one entry per layer)


READABLE = Target.SPAD      # the tables are write-only (see hw.hostif)


class HostCmd(enum.Enum, shape=4):
    HELLO = 0       # -> the hardware's parameters (see hw.top.hello_words)
    WRITE = 1       # addr, then count entries
    READ = 2        # addr -> count entries
    RUN = 3         # addr = first instruction -> one status word when END retires
    STATUS = 4      # -> STATUS_WORDS: the last status word, uptime, the performance counters


# first word of every host command; the second word is the address (or pc)
header_layout = data.StructLayout({"cmd": HostCmd, "target": Target, "count": unsigned(24)})

STATUS_OK = 0xD1
status_layout = data.StructLayout({"code": unsigned(8), "errors": unsigned(8),
                                   "pc": unsigned(16)})

# the controller's counters (cleared by RUN), one 32-bit word each
PERF_COUNTERS = ("cycles", "retired", "gemm_cycles", "softmax_cycles", "gelu_cycles",
                 "layernorm_cycles", "array_beats", "a_starved", "b_starved", "drain_rows")
# what STATUS returns: the status word of the last RUN, clock cycles since reset (wraps), counters
STATUS_WORDS = ("status", "uptime") + PERF_COUNTERS


def words_for(bits: int) -> int:
    """Host words per entry of ``bits`` bits (little-endian, word 0 = bits 0..31)."""
    return -(-bits // WORD_BITS)


# --------------------------------------------------------------------------------------------------
# link frames (hw.link in gateware, host.protocol on the host)
#
#   sync (2 bytes) | cmd | tag | length (2 bytes, little-endian) | payload | CRC16 (2 bytes, big-endian)
#
# The CRC (XMODEM: polynomial 0x1021, init 0, no reflection) covers cmd .. payload; big-endian so
# the receiver's CRC register ends on the residue. A request's cmd is a HostCmd and its payload
# the command's host words (header word, address word, WRITE data) as little-endian bytes. The
# reply echoes the tag: ACK with the command's reply words, or NAK with (reason, expected tag).

FRAME_SYNC = (0xA5, 0x5A)
FRAME_OVERHEAD = 8              # sync, header, CRC
FRAME_CRC = crc.catalog.CRC16_XMODEM
frame_header_layout = data.StructLayout({"cmd": unsigned(8), "tag": unsigned(8),
                                         "length": unsigned(16)})


class Reply(enum.Enum, shape=8):
    ACK = 0x80
    NAK = 0x81


class Nak(enum.Enum, shape=8):
    """Why a request was refused (the NAK payload's first byte)."""
    CRC = 1         # the CRC did not check: the payload was not used
    LENGTH = 2      # longer than the receive buffer, or not what the header word implies
    COMMAND = 3     # unknown command, the header word names another one, or a READ of a table
    TAG = 4         # out of sequence (neither the next tag nor a repeat of the last): say HELLO
    TIMEOUT = 5     # the frame stopped arriving mid-way (inter-byte timeout)
