"""The host link: frames over a byte stream, around the accelerator's word stream.

::

   rx bytes ─► parser (sync, header, payload into the receive buffer, CRC, inter-byte timeout)
                 │ frame complete (or refused)
                 ▼
               executor: checks command, length and tag ─► header + payload words ─► HostInterface
                 │ ACK: reply words from HostInterface │ NAK: reason, expected tag
                 ▼
   tx bytes ◄─ sync, header, payload, CRC

Frames are defined in :mod:`hw.isa` (shared with :mod:`host.protocol`). A request is used only
after its whole payload is in the receive buffer and its CRC checks, so a corrupted byte never
reaches a memory. Lengths are checked against the header word before a word is forwarded, so
the command processor never waits for words that are not coming.

Flow control is by credit: HELLO reports the receive buffer's size, and the host keeps at most one
request (of at most that many payload bytes) outstanding until its reply — the reply returns the
credit. Bytes that arrive while a request is being executed or answered are dropped (the UART
has no back-pressure either).

Tags make retries safe: a request carrying the tag of the last one executed is a retry whose
reply was lost — a WRITE is acknowledged again without writing, a RUN answers the saved status
without running again, reads run again. Any other tag than that one or the next is refused
(``Nak.TAG``), and HELLO (always accepted) starts the sequence at its own tag.

A frame that stops arriving for ``timeout_us`` is dropped (NAK ``TIMEOUT`` once its header is
known). ``idle`` is high when nothing is in flight: a simulation bridge may stop the clock then.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import ConfigError
from .isa import (
    FRAME_CRC,
    FRAME_SYNC,
    READABLE,
    WORD_BITS,
    HostCmd,
    Nak,
    Reply,
    Target,
    frame_header_layout,
    header_layout,
)

__all__ = ["LinkParams", "Link"]

MAX_REPLY = (1 << 16) - 1       # the length field


@dataclass(frozen=True)
class LinkParams:
    """``buffer``: receive buffer bytes (the largest request payload); ``clk_hz``: the core
    clock; ``baud``: the serial line rate (bits/s, 10 per byte); ``timeout_us``: how long a
    frame may stop arriving before it is dropped."""
    buffer: int = 1024
    clk_hz: int = 50_000_000
    baud: int = 3_000_000
    timeout_us: int = 2000

    def __post_init__(self):
        if not (64 <= self.buffer <= 1 << 15 and self.buffer % 4 == 0):
            raise ConfigError(f"link buffer {self.buffer} bytes: must be a multiple of 4 in "
                              f"[64, 32768]")
        if not 1 <= self.baud * 2 <= self.clk_hz:
            raise ConfigError(f"baud {self.baud} must be positive and at most half the clock "
                              f"({self.clk_hz} Hz)")
        if self.timeout_cycles < 20 * self.cycles_per_byte:
            raise ConfigError(f"link timeout {self.timeout_us} us is under 20 byte times at "
                              f"{self.baud} baud")

    @property
    def cycles_per_byte(self) -> float:
        return self.clk_hz * 10 / self.baud

    @property
    def timeout_cycles(self) -> int:
        return self.clk_hz * self.timeout_us // 1_000_000


def _times(x, n: int):
    """``x * n`` for a constant ``n`` as shifts and adds (no multiplier cell)."""
    terms = [x << b for b in range(n.bit_length()) if n >> b & 1]
    out = terms[0] if terms else Const(0)
    for t in terms[1:]:
        out = out + t
    return out


class Link(wiring.Component):
    """``rx``/``tx``: byte streams (``rx`` is always ready); ``i``/``o``: the command
    processor's word streams; ``host_idle``: it waits for a command. ``entry_words``: host words
    per entry of each :class:`~hw.isa.Target`; ``hello_words``/``status_words``: reply lengths
    of HELLO and STATUS."""

    def __init__(self, params: LinkParams, entry_words: dict, hello_words: int,
                 status_words: int):
        self.params, self.entry_words = params, dict(entry_words)
        self.hello_words, self.status_words = hello_words, status_words
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "i": Out(stream.Signature(WORD_BITS)),
                          "o": In(stream.Signature(WORD_BITS)),
                          "host_idle": In(1), "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.buf = buf = memory.Memory(shape=32, depth=p.buffer // 4, init=[])
        wr = buf.write_port(granularity=8)
        rd = buf.read_port()
        m.submodules.rx_crc = rx_crc = FRAME_CRC(data_width=8).create()
        m.submodules.tx_crc = tx_crc = FRAME_CRC(data_width=8).create()

        # ---- parser ----------------------------------------------------------------------------
        hdr = Signal(frame_header_layout)
        idx = Signal(16)
        timer = Signal(range(p.timeout_cycles + 1))
        pending = Signal()                  # a frame (or a refusal) waits for the executor
        code = Signal(8)                    # 0: a good frame, else the Nak reason
        byte = self.rx.payload
        take = self.rx.valid & ~pending
        m.d.comb += [self.rx.ready.eq(1), rx_crc.data.eq(byte)]
        m.d.comb += [wr.addr.eq(idx[2:]), wr.data.eq(byte.replicate(4))]

        def finish(reason):
            m.d.sync += [pending.eq(1), code.eq(reason)]
            m.next = "SYNC0"

        with m.FSM(name="rx") as rx_fsm:
            with m.State("SYNC0"):
                with m.If(take & (byte == FRAME_SYNC[0])):
                    m.next = "SYNC1"
            with m.State("SYNC1"):
                with m.If(take):
                    m.d.sync += idx.eq(0)
                    m.d.comb += rx_crc.start.eq(1)
                    with m.If(byte == FRAME_SYNC[1]):
                        m.next = "HEAD"
                    with m.Elif(byte != FRAME_SYNC[0]):
                        m.next = "SYNC0"
            with m.State("HEAD"):
                with m.If(take):
                    m.d.comb += rx_crc.valid.eq(1)
                    m.d.sync += [hdr.as_value().word_select(idx[:2], 8).eq(byte),
                                 idx.eq(idx + 1)]
                    with m.If(idx == 3):
                        m.d.sync += idx.eq(0)
                        length = Signal(16)
                        m.d.comb += length.eq(Signal.cast(byte) << 8 | hdr.length[:8])
                        with m.If(length > p.buffer):
                            finish(Nak.LENGTH)
                        with m.Elif(length == 0):
                            m.next = "CRC"
                        with m.Else():
                            m.next = "BODY"
            with m.State("BODY"):
                with m.If(take):
                    m.d.comb += [rx_crc.valid.eq(1), wr.en.eq(1 << idx[:2])]
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == hdr.length - 1):
                        m.d.sync += idx.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                with m.If(take):
                    m.d.comb += rx_crc.valid.eq(1)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(rx_crc.match_detected):
                    finish(0)
                with m.Else():
                    finish(Nak.CRC)

        # inter-byte timeout: a frame that stops arriving is dropped
        hunting = rx_fsm.ongoing("SYNC0") | rx_fsm.ongoing("CHECK")
        with m.If(hunting | take):
            m.d.sync += timer.eq(0)
        with m.Elif(timer == p.timeout_cycles):
            m.d.sync += timer.eq(0)
            with m.If(rx_fsm.ongoing("BODY") | rx_fsm.ongoing("CRC")):
                m.d.sync += [pending.eq(1), code.eq(Nak.TIMEOUT)]
            m.d.sync += rx_fsm.state.eq(rx_fsm.encoding["SYNC0"])
        with m.Else():
            m.d.sync += timer.eq(timer + 1)

        # ---- executor ----------------------------------------------------------------------------
        word = Signal(header_layout)        # the request's header word (registered)
        cmd = Signal(HostCmd)               # its command, kept
        session = Signal()                  # a HELLO has set the tag sequence
        last_tag = Signal(8)
        saved = Signal(32)                  # the last RUN's status word (replayed on a retry)
        reg = Signal(32)                    # a reply payload from a register: NAK, replayed RUN
        kind = Signal(8)
        reply_len = Signal(16)
        from_host = Signal()                # the reply payload comes from the command processor
        feed = Signal(16)                   # next payload word to forward
        rtag = Signal(8)                    # the request being answered: its tag, length
        rlen = Signal(16)
        release = Signal()                  # the receive buffer may take the next frame
        n_words = rlen[2:]
        hidx = Signal(3)
        bidx = Signal(2)
        left = Signal(16)

        # what the header word implies: request payload bytes, reply payload bytes (registered:
        # valid in CHECK)
        req_next, rep_next = Signal(32), Signal(32)
        req_len, rep_len = Signal(32), Signal(32)
        write_only = Signal()               # a READ of a table (only the scratchpad reads back)
        m.d.sync += [req_len.eq(req_next), rep_len.eq(rep_next),
                     write_only.eq((word.cmd == HostCmd.READ) & (word.target != READABLE))]
        with m.Switch(word.cmd):
            with m.Case(HostCmd.WRITE, HostCmd.READ):
                with m.Switch(word.target):
                    for t in Target:
                        with m.Case(t):
                            data_bytes = _times(word.count, 4 * self.entry_words[t])
                            with m.If(word.cmd == HostCmd.WRITE):
                                m.d.comb += req_next.eq(8 + data_bytes)
                            with m.Else():
                                m.d.comb += [req_next.eq(8), rep_next.eq(data_bytes)]
            with m.Case(HostCmd.HELLO):
                m.d.comb += [req_next.eq(8), rep_next.eq(4 * self.hello_words)]
            with m.Case(HostCmd.RUN):
                m.d.comb += [req_next.eq(8), rep_next.eq(4)]
            with m.Case(HostCmd.STATUS):
                m.d.comb += [req_next.eq(8), rep_next.eq(4 * self.status_words)]

        def nak(reason):
            m.d.sync += [kind.eq(Reply.NAK), reply_len.eq(2), from_host.eq(0),
                         reg.eq(Signal.cast(reason)[:8] | (last_tag + 1)[:8] << 8)]
            m.d.comb += release.eq(1)
            m.next = "SEND_HEAD"

        def ack(length, *, host=True):
            m.d.sync += [kind.eq(Reply.ACK), reply_len.eq(length), from_host.eq(host)]
            if host:
                m.next = "FEED"
            else:
                m.d.comb += release.eq(1)
                m.next = "SEND_HEAD"

        m.d.comb += rd.addr.eq(feed)
        m.d.sync += word.eq(rd.data)
        with m.FSM(name="exec") as ex_fsm:
            with m.State("IDLE"):
                m.d.sync += [feed.eq(0), rtag.eq(hdr.tag), rlen.eq(hdr.length)]
                with m.If(pending):
                    with m.If(code != 0):
                        nak(code)
                    with m.Elif(hdr.length < 8):
                        nak(Nak.LENGTH)
                    with m.Else():
                        m.next = "HEADER"
            with m.State("HEADER"):             # the header word's address is on the read port
                m.next = "WORD"
            with m.State("WORD"):               # ... its data on the read port
                m.next = "DECODE"
            with m.State("DECODE"):             # ... in `word`; the lengths it implies follow
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += cmd.eq(word.cmd)
                tag = rtag
                with m.If((hdr.cmd != word.cmd.as_value())
                          | (hdr.cmd > max(c.value for c in HostCmd)) | write_only):
                    nak(Nak.COMMAND)
                with m.Elif((rlen != req_len) | (rep_len > MAX_REPLY)):
                    nak(Nak.LENGTH)
                with m.Elif(word.cmd == HostCmd.HELLO):
                    m.d.sync += [session.eq(1), last_tag.eq(tag)]
                    ack(rep_len)
                with m.Elif(~session):
                    nak(Nak.TAG)
                with m.Elif(tag == last_tag):           # a retry: its reply was lost
                    with m.If(word.cmd == HostCmd.WRITE):
                        ack(0, host=False)
                    with m.Elif(word.cmd == HostCmd.RUN):
                        ack(4, host=False)
                        m.d.sync += reg.eq(saved)
                    with m.Else():
                        ack(rep_len)
                with m.Elif(tag == (last_tag + 1)[:8]):
                    m.d.sync += last_tag.eq(tag)
                    ack(rep_len)
                with m.Else():
                    nak(Nak.TAG)
            with m.State("FEED"):
                # the read port holds word `feed` (its address was set a cycle ago)
                m.d.comb += [self.i.valid.eq(1), self.i.payload.eq(rd.data)]
                with m.If(self.i.ready):
                    m.d.comb += rd.addr.eq(feed + 1)
                    m.d.sync += feed.eq(feed + 1)
                    with m.If(feed + 1 == n_words):
                        m.d.comb += release.eq(1)
                        m.next = "REPLY"
            with m.State("REPLY"):
                # reply once the command processor has one (RUN: when the program ends)
                with m.If(self.o.valid | ((reply_len == 0) & self.host_idle)):
                    m.next = "SEND_HEAD"
            with m.State("SEND_HEAD"):
                head = Array([Const(FRAME_SYNC[0], 8), Const(FRAME_SYNC[1], 8), kind,
                              rtag, reply_len[:8], reply_len[8:]])
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(head[hidx]),
                             tx_crc.data.eq(head[hidx]),
                             tx_crc.start.eq(hidx == 2),
                             tx_crc.valid.eq(self.tx.ready & (hidx >= 2))]
                with m.If(self.tx.ready):
                    m.d.sync += [hidx.eq(hidx + 1), left.eq(reply_len), bidx.eq(0)]
                    with m.If(hidx == 5):
                        m.d.sync += hidx.eq(0)
                        m.next = "BODY"
                        with m.If(reply_len == 0):
                            m.next = "CRC_HI"
            with m.State("BODY"):
                src = Signal(32)
                m.d.comb += src.eq(Mux(from_host, self.o.payload, reg))
                b = src.word_select(bidx, 8)
                m.d.comb += [self.tx.valid.eq(~from_host | self.o.valid), self.tx.payload.eq(b),
                             tx_crc.data.eq(b), tx_crc.valid.eq(self.tx.valid & self.tx.ready)]
                with m.If(self.tx.valid & self.tx.ready):
                    m.d.sync += [bidx.eq(bidx + 1), left.eq(left - 1)]
                    with m.If(from_host & (bidx == 3)):
                        m.d.comb += self.o.ready.eq(1)
                        with m.If(cmd == HostCmd.RUN):
                            m.d.sync += saved.eq(self.o.payload)
                    with m.If(left == 1):
                        m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc.crc[8:])]
                with m.If(self.tx.ready):
                    m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(tx_crc.crc[:8])]
                with m.If(self.tx.ready):
                    m.next = "IDLE"

        with m.If(release):
            m.d.sync += pending.eq(0)
        m.d.comb += self.idle.eq(rx_fsm.ongoing("SYNC0") & ~pending & ex_fsm.ongoing("IDLE")
                                 & self.host_idle)
        return m
