"""Bytes to and from the device: pyserial's ``serial_for_url`` — a serial device
(``/dev/ttyUSB1``), a pty path (the simulation bridge) or ``socket://HOST:PORT``."""
from __future__ import annotations

import time

import serial

__all__ = ["Transport", "LinkError"]


class LinkError(RuntimeError):
    """The device could not be reached, or stopped answering: a one-line reason."""


class Transport:
    def __init__(self, url: str, baud: int = 3_000_000):
        self.url, self.baud = url, baud
        try:
            self.port = serial.serial_for_url(url, baudrate=baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"cannot open {url}: {exc}") from None

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"{self.url}: write failed: {exc}") from None

    def read(self, wait: float) -> bytes:
        """Whatever arrives within ``wait`` seconds (returns as soon as something does)."""
        try:
            self.port.timeout = max(wait, 0.0)
            first = self.port.read(1)
            if not first:
                return b""
            self.port.timeout = 0
            return first + self.port.read(max(self.port.in_waiting, 1 << 16))
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"{self.url}: read failed: {exc}") from None

    def reset_input(self) -> None:
        """Drop anything already received (a previous session's replies)."""
        time.sleep(0.01)
        while self.read(0.0):
            pass

    def close(self) -> None:
        self.port.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
