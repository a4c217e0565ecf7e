"""The link's frame protocol on the host: encode requests, parse replies, retry.

Frames are defined once, in :mod:`hw.isa` (``FRAME_SYNC``, ``frame_header_layout``, ``Reply``,
``Nak``, ``FRAME_CRC``), and checked in gateware by :mod:`hw.link`. The host keeps one request in
flight (the receive buffer's credit, reported by HELLO, bounds its payload) and retries it with
the same tag after a NAK, a corrupted or missing reply: the device executes a request once and
answers a repeat from what it kept.
"""
from __future__ import annotations

import os
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from hw.isa import FRAME_CRC, FRAME_OVERHEAD, FRAME_SYNC, HostCmd, Nak, Reply

from .transport import LinkError, Transport

__all__ = ["encode", "Frame", "FrameReader", "Link", "LinkError", "LinkStats", "SessionLost"]

_CRC = FRAME_CRC(data_width=8)
_SYNC = bytes(FRAME_SYNC)
MAX_REPLY = 4096        # the longest reply payload the host asks for (READs are cut to this)
# NAKs for a frame the device could not read whole: repeat the request whatever tag it names
_DAMAGED = {bytes([n.value]) for n in (Nak.CRC, Nak.LENGTH, Nak.TIMEOUT)}


def encode(cmd: int, tag: int, payload: bytes = b"") -> bytes:
    """One frame: sync, cmd, tag, length, payload, CRC16 (big-endian)."""
    body = struct.pack("<BBH", cmd, tag, len(payload)) + bytes(payload)
    return _SYNC + body + _CRC.compute(body).to_bytes(2, "big")


@dataclass
class Frame:
    cmd: int
    tag: int
    payload: bytes


class FrameReader:
    """Finds frames in a byte stream: hunts for the sync bytes, skips anything announcing more
    than ``max_payload`` or (``check``) whose CRC does not check — counted in ``bad`` — and
    resumes right after that frame's sync."""

    def __init__(self, max_payload: int = (1 << 16) - 1, check: bool = True):
        self.buf = bytearray()
        self.max_payload, self.check = max_payload, check
        self.bad = 0            # frames dropped for their CRC or length
        self.skipped = 0        # bytes that were not part of a frame

    def cut(self, data: bytes = b"") -> list[tuple[bool, bytes]]:
        """The stream so far, in order: ``(True, a whole frame)`` and ``(False, bytes between
        frames)``; an incomplete frame stays buffered."""
        self.buf += data
        buf, out = self.buf, []
        while True:
            start = buf.find(_SYNC)
            if start < 0:
                n = len(buf) - (1 if buf[-1:] == _SYNC[:1] else 0)
                if n:
                    out.append((False, bytes(buf[:n])))
                    del buf[:n]
                return out
            if start:
                out.append((False, bytes(buf[:start])))
                del buf[:start]
            if len(buf) < 6:
                return out
            (length,) = struct.unpack_from("<H", buf, 4)
            end = length + FRAME_OVERHEAD
            if length <= self.max_payload and len(buf) < end:
                return out
            if length > self.max_payload or (self.check and _CRC.compute(buf[2:end]) != 0):
                self.bad += 1                       # (data + big-endian CRC: residue 0)
                out.append((False, bytes(buf[:2])))
                del buf[:2]
                continue
            out.append((True, bytes(buf[:end])))
            del buf[:end]

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        for whole, piece in self.cut(data):
            if whole:
                frames.append(Frame(piece[2], piece[3], piece[6:-2]))
            else:
                self.skipped += len(piece)
        return frames

    def flush(self) -> list[Frame]:
        """The sender went quiet: a frame still incomplete never will be (a false sync in
        garbage announced it). Drop its sync and look again at what followed."""
        out = []
        while len(self.buf) >= 2:
            self.bad += 1
            del self.buf[:2]
            out += self.feed(b"")
        self.buf.clear()
        return out


@dataclass
class LinkStats:
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    naks: Counter = field(default_factory=Counter)
    bad_frames: int = 0         # replies whose CRC did not check
    stale: int = 0              # replies to another tag (a repeat's late answer)
    bytes_out: int = 0
    bytes_in: int = 0


_DEBUG = bool(os.environ.get("DYAD_LINK_DEBUG"))


class SessionLost(LinkError):
    """The device refused the request's tag: its tag sequence was reset (another HELLO). The
    request may or may not have run: say HELLO and repeat what depends on it."""


class Link:
    """Requests and replies over a :class:`~host.transport.Transport`, one in flight.
    ``timeout``: seconds without a byte before a request is repeated (RUN waits up to
    ``run_timeout`` for its reply to begin); ``retries``: attempts per request before
    :class:`LinkError`."""

    def __init__(self, transport: Transport, *, timeout: float = 1.0, run_timeout: float = 60.0,
                 retries: int = 10):
        self.t = transport
        self.timeout, self.run_timeout, self.retries = timeout, run_timeout, retries
        self.tag = 0
        self.reader = FrameReader()
        self.stats = LinkStats()
        self.sec_per_byte = 10 / transport.baud        # learnt from the replies

    def request(self, cmd: HostCmd, payload: bytes, reply_len: int) -> bytes:
        """Send one request and return its ACK payload (``reply_len`` bytes), repeating it
        after a NAK, a corrupted reply or silence. HELLO starts a new tag sequence."""
        self.tag = (self.tag + 1) & 0xFF
        if cmd == HostCmd.HELLO:            # whatever an earlier session left in flight
            self.t.reset_input()
            self.reader = FrameReader()
        frame = encode(cmd.value, self.tag, payload)
        self.stats.requests += 1
        why = "no attempt"
        for attempt in range(self.retries):
            if attempt:
                self.stats.retries += 1
            self.t.write(frame)
            self.stats.bytes_out += len(frame)
            # the request and its reply must cross the line first: allow for that at the rate
            # seen so far (a simulated line is far slower than its nominal baud)
            moving = self.sec_per_byte * (len(frame) + reply_len + FRAME_OVERHEAD)
            first = (self.run_timeout if cmd == HostCmd.RUN else self.timeout) + 2 * moving
            t0 = time.monotonic()
            reply, why = self._await(self.tag, first, reply_len)
            if reply is not None and cmd != HostCmd.RUN:
                took = (time.monotonic() - t0) / (len(frame) + len(reply.payload) + FRAME_OVERHEAD)
                self.sec_per_byte = max(0.9 * self.sec_per_byte, took)
            if reply is None:
                if _DEBUG:
                    print(f"link: {cmd.name} tag {self.tag} attempt {attempt}: {why}")
                continue
            if reply.cmd == Reply.ACK.value:
                if len(reply.payload) != reply_len:
                    raise LinkError(f"{self.t.url}: {cmd.name} answered {len(reply.payload)} "
                                    f"bytes, expected {reply_len} (protocol mismatch?)")
                return reply.payload
            code = reply.payload[0] if reply.payload else 0
            reason = Nak(code).name if code in {n.value for n in Nak} else f"code {code}"
            self.stats.naks[reason] += 1
            why = f"NAK {reason}"
            if code == Nak.TAG.value and cmd != HostCmd.HELLO:
                raise SessionLost(f"{self.t.url}: the device refused tag {self.tag} of "
                                  f"{cmd.name}: its session was reset")
        raise LinkError(f"{self.t.url}: no valid reply to {cmd.name} after {self.retries} "
                        f"attempts (last: {why})")

    def _await(self, tag: int, first: float, reply_len: int):
        """The reply to ``tag``; or ``(None, why)`` at once after a corrupted frame (the device
        has finished sending it), or after ``first`` seconds with no byte at all, or
        ``timeout`` seconds without a byte once bytes arrive."""
        deadline = time.monotonic() + first
        # a false sync in garbage cannot swallow more than the longest reply
        self.reader.max_payload = max(reply_len, MAX_REPLY)
        bad = self.reader.bad
        while True:
            now = time.monotonic()
            if now >= deadline:
                for f in self.reader.flush():
                    if f.cmd in (Reply.ACK.value, Reply.NAK.value) and f.tag == tag:
                        return f, ""
                self.stats.timeouts += 1
                return None, "timeout"
            data = self.t.read(deadline - now)
            if data:
                self.stats.bytes_in += len(data)
                deadline = max(deadline, time.monotonic() + self.timeout)
            for f in self.reader.feed(data):
                if f.cmd in (Reply.ACK.value, Reply.NAK.value) and f.tag == tag:
                    return f, ""
                if f.cmd == Reply.NAK.value and f.payload[:1] in _DAMAGED:
                    # a damaged frame: maybe ours with its tag damaged too
                    self.stats.naks[Nak(f.payload[0]).name] += 1
                    return None, f"NAK {Nak(f.payload[0]).name} (tag {f.tag})"
                self.stats.stale += 1
            if self.reader.bad > bad:
                self.stats.bad_frames += self.reader.bad - bad
                return None, "a corrupted reply"
