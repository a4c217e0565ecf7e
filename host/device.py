"""A Dyad accelerator as the host sees it: handshake, load a program, run inferences, read
results and performance counters — the same code for a board and for the simulation bridge."""
from __future__ import annotations

import struct
import time

import numpy as np

from gen.compiler import Program, command, split_command
from hw.isa import (
    PERF_COUNTERS,
    READABLE,
    STATUS_OK,
    STATUS_WORDS,
    HostCmd,
    header_layout,
    status_layout,
    words_for,
)
from hw.link import LinkParams
from hw.scratchpad import (
    HELLO_FIELDS,
    HELLO_MAGIC,
    LINK_FIELDS,
    PROTOCOL_VERSION,
    hello_words,
)
from hw.top import entry_bits

from .protocol import MAX_REPLY, Link, LinkError, SessionLost
from .transport import Transport

__all__ = ["Device", "DeviceMismatch", "RunFailed"]



class DeviceMismatch(LinkError):
    """The device is not the hardware the program was built for."""


class RunFailed(LinkError):
    """A RUN ended with an error status."""


def _words(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def _bytes(words: list[int]) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


class Device:
    """``Device.open(url)`` (or around a :class:`~host.protocol.Link`): ``hello()`` first (it
    starts the link's tag sequence), ``attach(program)`` to refuse a program built for other
    hardware, ``load()``, then ``infer(x)`` per input."""

    def __init__(self, link: Link):
        self.link = link
        self.info: dict | None = None
        self.program: Program | None = None
        self.resyncs = 0        # HELLOs repeated after the device's session was reset

    @classmethod
    def open(cls, url: str, *, baud: int = 3_000_000, **link_kw) -> "Device":
        return cls(Link(Transport(url, baud), **link_kw))

    def close(self) -> None:
        self.link.t.close()

    # ---- commands ------------------------------------------------------------------------
    def _send(self, words: list[int], reply_words: int) -> list[int]:
        """One command. If the device's session was reset under us, say HELLO again and
        repeat it — except RUN, whose inputs may be gone (:meth:`infer` repeats the whole
        inference)."""
        cmd = header_layout.from_bits(words[0]).cmd
        for attempt in range(3):
            try:
                return _words(self.link.request(cmd, _bytes(words), 4 * reply_words))
            except SessionLost:
                if cmd == HostCmd.RUN or attempt == 2:
                    raise
                self.resyncs += 1
                self.hello()

    def hello(self) -> dict:
        """The device's parameters (:data:`hw.scratchpad.HELLO_FIELDS`)."""
        data = self.link.request(HostCmd.HELLO, _bytes(command(HostCmd.HELLO)),
                                 4 * len(HELLO_FIELDS))
        info = dict(zip(HELLO_FIELDS, _words(data)))
        if info["magic"] != HELLO_MAGIC:
            raise DeviceMismatch(f"{self.link.t.url}: not a Dyad accelerator (magic "
                                 f"{info['magic']:#x})")
        if info["version"] != PROTOCOL_VERSION:
            raise DeviceMismatch(f"{self.link.t.url}: protocol version {info['version']}, this "
                                 f"host speaks {PROTOCOL_VERSION}: rebuild the bitstream or "
                                 f"update the host")
        self.info = info
        return info

    def attach(self, program: Program) -> None:
        """Refuse ``program`` unless the device is the hardware it was built for."""
        if self.info is None:
            self.hello()
        want = dict(zip(HELLO_FIELDS, hello_words(program.cfg, program.sizes(), LinkParams())))
        diff = [f"{k} {want[k]} (device {self.info[k]})" for k in HELLO_FIELDS
                if k not in LINK_FIELDS and want[k] != self.info[k]]
        if diff:
            cfg = program.cfg
            raise DeviceMismatch(f"the program was built for other hardware ({cfg.rows}x"
                                 f"{cfg.cols} W{cfg.wbits}A{cfg.abits} {cfg.mode}): "
                                 + ", ".join(diff))
        self.program = program
        self._entry_words = {t: words_for(b) for t, b in entry_bits(program.cfg).items()}

    def _transfer(self, words: list[int]) -> list[int]:
        """A WRITE or READ of any size, cut to the link's limits."""
        hdr = header_layout.from_bits(words[0])
        if hdr.cmd == HostCmd.READ and hdr.target != READABLE:
            raise ValueError(f"READ {hdr.target.name}: the device's tables are write-only; only "
                             f"{READABLE.name} reads back")
        out = []
        for part in split_command(words, self._entry_words, self.info["link_buffer"],
                                  MAX_REPLY):
            hdr = header_layout.from_bits(part[0])
            reply = hdr.count * self._entry_words[hdr.target] if hdr.cmd == HostCmd.READ else 0
            out += self._send(part, reply)
        return out

    def load(self, segmented: bool = False) -> int:
        """Write the program's instructions, tables and constants; returns the bytes sent."""
        sent = 0
        for cmd in self._need_program().load_commands(segmented):
            self._transfer(cmd)
            sent += 4 * len(cmd)
        return sent

    def run(self, pc: int = 0) -> int:
        """Run from ``pc`` until END; returns the pc it stopped at."""
        t0 = time.monotonic()
        word = self._send(command(HostCmd.RUN, pc), 1)[0]
        # once a run's length is known, a lost RUN or reply is repeated after a few times that
        # (not after the first run's generous wait)
        took = time.monotonic() - t0
        self.link.run_timeout = min(self.link.run_timeout, 4 * took + self.link.timeout)
        status = status_layout.from_bits(word)
        if int(status.code) != STATUS_OK:
            raise RunFailed(f"RUN at {pc}: bad status word {word:#010x}")
        if int(status.errors):
            raise RunFailed(f"RUN at {pc}: a vector unit flagged error {int(status.errors):#x} "
                            f"(a row longer than it buffers)")
        return int(status.pc)

    def status(self) -> dict:
        """:data:`hw.isa.STATUS_WORDS`: last status word, uptime (cycles), counters."""
        return dict(zip(STATUS_WORDS, self._send(command(HostCmd.STATUS), len(STATUS_WORDS))))

    def perf(self) -> dict:
        s = self.status()
        return {k: s[k] for k in PERF_COUNTERS}

    def write_input(self, x: np.ndarray) -> None:
        self._transfer(self._need_program().input_commands(x))

    def read_tensor(self, name: str) -> np.ndarray:
        prog = self._need_program()
        return prog.decode(name, self._transfer(prog.tensor_command(name)))

    def infer(self, x: np.ndarray) -> np.ndarray:
        """One input through the loaded program: WRITE it, RUN, READ the output."""
        prog = self._need_program()
        for attempt in range(3):
            try:
                self.write_input(x)
                self.run(0)
                return self.read_tensor(prog.output)
            except SessionLost:
                if attempt == 2:
                    raise
                self.resyncs += 1
                self.hello()

    def _need_program(self) -> Program:
        if self.program is None:
            raise LinkError("no program attached: call attach(program) first")
        return self.program
