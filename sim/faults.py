"""Fault injection between the host and the simulation bridge: a TCP proxy that damages frames
on their way, seeded, and counts what it did.

Towards the device (``TO_DEVICE``): a flipped CRC bit, payload bit or header bit, a frame cut
short (the rest never comes), garbage before a frame (sometimes with a false sync and header),
a frame sent twice, an earlier frame replayed first (a stale tag, from the last ``REPLAY_WINDOW``
frames), a bogus frame longer than the receive buffer, a frame dropped. Towards the host
(``TO_HOST``): a flipped bit, a cut reply, garbage, a dropped reply.

The host (:mod:`host`) connects to ``proxy.url`` exactly as it would to the bridge.
"""
from __future__ import annotations

import random
import socket
import threading
from collections import Counter

from host.protocol import FrameReader, encode
from hw.isa import FRAME_OVERHEAD, FRAME_SYNC

__all__ = ["FaultProxy", "TO_DEVICE", "TO_HOST", "REPLAY_WINDOW"]

# kind -> relative weight (faults that leave the host waiting out its timeout weigh less)
TO_DEVICE = {"crc": 2, "payload_bit": 2, "header_bit": 2, "truncate": 2, "garbage": 2,
             "duplicate": 2, "replay": 2, "oversize": 2, "drop": 1}
TO_HOST = {"reply_bit": 2, "reply_truncate": 1, "reply_garbage": 2, "reply_drop": 1}
REPLAY_WINDOW = 16          # tags are 8 bits: a frame 255 requests old would look new
_SYNC = bytes(FRAME_SYNC)


class FaultProxy:
    """Listens on ``url`` and forwards each connection to ``target`` (``host:port``),
    damaging a fraction ``rate`` of the frames. ``buffer``: the device's receive buffer
    (oversize frames exceed it). ``counts``: faults injected, by kind."""

    def __init__(self, target: str, *, rate: float = 0.3, seed: int = 1, buffer: int = 1024,
                 to_device: dict = TO_DEVICE, to_host: dict = TO_HOST):
        host, port = target.replace("socket://", "").rsplit(":", 1)
        self.target = (host, int(port))
        self.rate, self.buffer = rate, buffer
        self.rng = random.Random(seed)
        self.kinds = {"device": to_device, "host": to_host}
        self.counts: Counter = Counter()
        self.history: list[bytes] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        self.closed = True
        self.listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- plumbing ----------------------------------------------------------------------------
    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            device = socket.create_connection(self.target)
            for s in (client, device):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client, device, "device"),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(device, client, "host"),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, towards: str):
        frames = FrameReader(check=False)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                out = b""
                for whole, piece in frames.cut(data):
                    out += self._damage(piece, towards) if whole else piece
                if out:
                    dst.sendall(out)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    # ---- faults ------------------------------------------------------------------------------
    def _damage(self, frame: bytes, towards: str) -> bytes:
        with self.lock:
            rng = self.rng
            if towards == "device":
                self.history = (self.history + [frame])[-REPLAY_WINDOW:]
            if rng.random() >= self.rate:
                return frame
            kinds = self.kinds[towards]
            kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
            self.counts[kind] += 1
            f = bytearray(frame)
            n = len(f)
            if kind == "crc":
                f[n - 1 - rng.randrange(2)] ^= 1 << rng.randrange(8)
            elif kind in ("payload_bit", "reply_bit") and n > FRAME_OVERHEAD:
                f[rng.randrange(6, n - 2) if kind == "payload_bit" else rng.randrange(2, n)] ^= \
                    1 << rng.randrange(8)
            elif kind in ("header_bit", "payload_bit", "reply_bit"):
                f[rng.randrange(2, 6)] ^= 1 << rng.randrange(8)
            elif kind in ("truncate", "reply_truncate"):
                cut = rng.randrange(6, n - 1) if rng.random() < 0.75 else rng.randrange(1, 6)
                f = f[:cut]
            elif kind in ("garbage", "reply_garbage"):
                junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
                if rng.random() < 0.3:          # a false sync and header inside the junk
                    junk += _SYNC + bytes(rng.randrange(256) for _ in range(4))
                f = bytearray(junk) + f
            elif kind == "duplicate":
                f = f + f
            elif kind == "replay":
                f = bytearray(rng.choice(self.history)) + f
            elif kind == "oversize":
                length = self.buffer + rng.randrange(4, 600)
                bogus = encode(rng.randrange(5), (frame[3] + 128) & 0xFF,
                               bytes(rng.randrange(256) for _ in range(length)))
                f = bytearray(bogus) + f
            elif kind in ("drop", "reply_drop"):
                f = bytearray()
            return bytes(f)
