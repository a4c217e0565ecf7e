"""The host link end to end: the framed protocol in gateware (:mod:`hw.link`) behind the Verilator
bridge, driven by the unchanged host runtime (:mod:`host`) — directed frames, the digits ViT
through ``python -m host run --sim``, fault injection, a host that vanishes, bad user input."""
from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from gen.compiler import command, compile_model, golden_io, read_command, write_command
from gen.workloads import digits_vit
from host.__main__ import SIM_DEFAULT
from host.__main__ import main as host_main
from host.device import Device
from host.protocol import FrameReader, LinkError, encode
from hw.isa import FRAME_CRC, STATUS_WORDS, HostCmd, Nak, Reply, Target, status_layout
from hw.scratchpad import HELLO_FIELDS, spad_layout
from sim.bridge import BRIDGE_LINK, Bridge
from sim.faults import TO_DEVICE, TO_HOST, FaultProxy

CFG = SIM_DEFAULT           # what `python -m host run --sim` builds: one cached bridge for all


@pytest.fixture(scope="module")
def digits():
    im, X = digits_vit(CFG, 100)
    prog = compile_model(im, CFG)
    xs, want = golden_io(im, prog, X)
    return prog, xs, want


@pytest.fixture(scope="module")
def bridge(digits):
    with Bridge(CFG, digits[0].sizes()) as b:
        yield b


# ---- the frame codec on the host (no simulator) -------------------------------------------

def test_crc_is_the_catalog_entry():
    assert FRAME_CRC(data_width=8).compute(b"123456789") == 0x31C3
    frame = encode(HostCmd.HELLO.value, 7, b"\x01\x02\x03")
    assert frame[:2] == b"\xa5\x5a" and frame[2:6] == bytes([0, 7, 3, 0])
    assert FRAME_CRC(data_width=8).compute(frame[2:]) == 0          # residue: big-endian CRC


def test_reader_resyncs_after_garbage_and_bad_frames():
    r = FrameReader(max_payload=4096)
    good = [encode(Reply.ACK.value, t, bytes(range(t))) for t in range(5)]
    bad = bytearray(good[1])
    bad[7] ^= 0x10
    stream = b"\x00\xa5garbage" + good[0] + bytes(bad) + b"\xa5\x5a\x01" + good[2] + good[3]
    frames = []
    for i in range(0, len(stream), 3):                                 # arrives in pieces
        frames += r.feed(stream[i:i + 3])
    assert [(f.tag, f.payload) for f in frames] == [(0, b""), (2, bytes(range(2))),
                                                    (3, bytes(range(3)))]
    assert r.bad >= 1
    # a false sync announcing a long frame swallows what follows until the sender goes quiet
    r = FrameReader()
    assert r.feed(b"\xa5\x5a\x00\x09\xff\x01" + good[4]) == []
    assert [f.tag for f in r.flush()] == [4]


# ---- directed frames against the gateware --------------------------------------------------

class Raw:
    """Hand-made frames on a raw socket to the bridge."""

    def __init__(self, url):
        host, port = url.replace("socket://", "").rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)))
        self.s.settimeout(0.2)
        self.r = FrameReader()

    def send(self, data: bytes):
        self.s.sendall(data)

    def reply(self, wait=5.0):
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = self.s.recv(65536)
            except TimeoutError:
                data = b""
            frames = self.r.feed(data)
            if frames:
                assert len(frames) == 1, frames
                return frames[0]
        raise AssertionError("no reply")

    def request(self, words, tag, cmd=None):
        payload = struct.pack(f"<{len(words)}I", *words)
        self.send(encode((cmd if cmd is not None else words[0] & 0xF), tag, payload))
        return self.reply()

    def close(self):
        self.s.close()


def _nak(frame, tag, reason):
    assert (frame.cmd, frame.tag, frame.payload[0]) == (Reply.NAK.value, tag, reason.value), frame


def test_directed_frames(bridge, digits):
    prog = digits[0]
    raw = Raw(bridge.url)
    try:
        # before HELLO no tag is in sequence
        _nak(raw.request(command(HostCmd.STATUS), 9), 9, Nak.TAG)
        f = raw.request(command(HostCmd.HELLO), 40)
        assert (f.cmd, f.tag) == (Reply.ACK.value, 40)
        hello = dict(zip(HELLO_FIELDS, struct.unpack(f"<{len(HELLO_FIELDS)}I", f.payload)))
        assert hello["rows"] == CFG.rows and hello["link_buffer"] == BRIDGE_LINK.buffer
        # a flipped CRC bit, a payload bit: refused, nothing written
        frame = bytearray(encode(HostCmd.STATUS.value, 41, struct.pack("<2I",
                                                                        *command(HostCmd.STATUS))))
        frame[-1] ^= 0x04
        raw.send(bytes(frame))
        _nak(raw.reply(), 41, Nak.CRC)
        # longer than the receive buffer: refused at the header
        raw.send(encode(HostCmd.WRITE.value, 41, bytes(BRIDGE_LINK.buffer + 4)))
        _nak(raw.reply(), 41, Nak.LENGTH)
        # a WRITE whose header word promises more entries than the frame carries
        spad = spad_layout(CFG)
        words = write_command(Target.SPAD, spad, 100, [[1] * CFG.cols] * 3)
        words[0] += 1 << 8                                            # count 4, data for 3
        _nak(raw.request(words, 41), 41, Nak.LENGTH)
        # the frame says READ, its header word says STATUS
        _nak(raw.request(command(HostCmd.STATUS), 41, cmd=HostCmd.READ.value), 41, Nak.COMMAND)
        # the tables are write-only: a READ of any of them is refused
        for table in (Target.IMEM, Target.PTAB, Target.VTAB):
            _nak(raw.request(read_command(table, 0, 1), 41), 41, Nak.COMMAND)
        # a frame that stops arriving
        raw.send(encode(HostCmd.STATUS.value, 41, struct.pack("<2I", *command(HostCmd.STATUS)))[:9])
        _nak(raw.reply(), 41, Nak.TIMEOUT)
        # out of sequence (neither the last tag nor the next)
        _nak(raw.request(command(HostCmd.STATUS), 45), 45, Nak.TAG)
        # a repeated WRITE is acknowledged without writing again
        a = [[(7 * i + j) % 200 - 100 for j in range(CFG.cols)] for i in range(3)]
        b = [[5] * CFG.cols] * 3
        assert raw.request(write_command(Target.SPAD, spad, 100, a), 41).cmd == Reply.ACK.value
        assert raw.request(write_command(Target.SPAD, spad, 100, b), 41).cmd == Reply.ACK.value
        back = raw.request(read_command(Target.SPAD, 100, 3), 42)
        assert back.cmd == Reply.ACK.value and back.payload == struct.pack(
            "<" + "I" * 12, *write_command(Target.SPAD, spad, 100, a)[2:])
        # load the program and an input; a repeated RUN answers the saved status, not running
        raw.close()
        dev = Device.open(bridge.url)
        dev.hello()
        dev.attach(prog)
        dev.load()
        with pytest.raises(ValueError, match="READ IMEM: the device's tables are write-only"):
            dev._transfer(read_command(Target.IMEM, 0, 1))
        dev.write_input(digits[1][0])
        dev.close()
        raw = Raw(bridge.url)

        def status(tag):
            f = raw.request(command(HostCmd.STATUS), tag)
            return dict(zip(STATUS_WORDS, struct.unpack(f"<{len(STATUS_WORDS)}I", f.payload)))

        assert raw.request(command(HostCmd.HELLO), 60).cmd == Reply.ACK.value
        u0 = status(61)["uptime"]
        run = raw.request(command(HostCmd.RUN), 62)
        word = struct.unpack("<I", run.payload)[0]
        assert int(status_layout.from_bits(word).errors) == 0
        assert raw.request(command(HostCmd.RUN), 62).payload == run.payload
        after = status(63)
        assert after["status"] == word and after["cycles"] > 10_000
        assert after["uptime"] - u0 < 1.5 * after["cycles"], "the repeated RUN ran again"
        # the frame says RUN, the header word STATUS
        _nak(raw.request(command(HostCmd.STATUS), 64, cmd=HostCmd.RUN.value), 64, Nak.COMMAND)
    finally:
        raw.close()


# ---- the digits ViT through the unchanged host runtime ------------------------------------

def test_host_run_sim_digits(capsys):
    """``python -m host run --sim``: 20 digits test images, every output bit-exact."""
    rc = host_main(["run", "--sim", "--images", "20"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    assert "20/20 outputs bit-exact vs gen.golden" in out


@pytest.mark.slow
def test_host_run_sim_digits_100(capsys):
    rc = host_main(["run", "--sim", "--images", "100"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0 and "100/100 outputs bit-exact" in out


def _load_and_check(url, digits, images):
    """A fresh host: HELLO, load the program, ``images`` inferences, each bit-exact."""
    prog, xs, want = digits
    dev = Device.open(url)
    try:
        dev.hello()
        dev.attach(prog)
        dev.load()
        for n in range(images):
            assert np.array_equal(dev.infer(xs[n]).reshape(-1), want[n].reshape(-1))
    finally:
        dev.close()


def test_pty_bridge(digits):
    with Bridge(CFG, digits[0].sizes(), pty=True) as b:
        assert b.url.startswith("/dev/")
        _load_and_check(b.url, digits, 2)


# ---- faults ----------------------------------------------------------------------------------

def test_fault_injection(bridge, digits):
    """Hundreds of damaged, cut, repeated, stale, oversized and lost frames in both directions:
    the device never hangs, the host repeats what it must, every inference stays bit-exact."""
    prog, xs, want = digits
    n_images = 40
    with FaultProxy(bridge.url, rate=0.45, seed=7, buffer=BRIDGE_LINK.buffer) as proxy:
        # an attempt fails about half the time at this rate: allow long runs of bad luck
        dev = Device.open(proxy.url, timeout=0.5, retries=25)
        try:
            dev.hello()
            dev.attach(prog)
            dev.load()
            exact = sum(np.array_equal(dev.infer(xs[n]).reshape(-1), want[n].reshape(-1))
                        for n in range(n_images))
        finally:
            dev.close()
    st = dev.link.stats
    print(f"\nfaults injected: {proxy.total} {dict(sorted(proxy.counts.items()))}\n"
          f"host: {st.requests} requests, {st.retries} retries, {st.timeouts} timeouts, "
          f"NAKs {dict(st.naks)}, {st.bad_frames} corrupted replies, {st.stale} stale, "
          f"{dev.resyncs} resyncs; {exact}/{n_images} bit-exact")
    assert exact == n_images
    assert proxy.total >= 300
    assert set(proxy.counts) == set(TO_DEVICE) | set(TO_HOST), "every kind of fault ran"
    assert st.retries > 0 and st.naks["CRC"] > 0 and st.naks["TIMEOUT"] > 0


def test_dead_line_gives_a_clear_error(bridge):
    """Every frame lost: the host gives up after its attempts with one line naming why."""
    with FaultProxy(bridge.url, rate=1.0, to_device={"drop": 1}) as proxy:
        dev = Device.open(proxy.url, timeout=0.2, retries=3)
        with pytest.raises(LinkError, match=r"no valid reply to HELLO after 3 attempts "
                                            r"\(last: timeout\)"):
            dev.hello()
        dev.close()


def test_host_vanishes_mid_transfer(bridge, digits):
    prog = digits[0]
    # cut off in the middle of a request (the device times out, drops it)
    raw = Raw(bridge.url)
    raw.request(command(HostCmd.HELLO), 1)
    frame = encode(HostCmd.WRITE.value, 2, bytes(1000))
    raw.send(frame[:500])
    raw.close()
    # cut off while the device sends a long reply (the bridge drops the rest, as a wire would)
    raw = Raw(bridge.url)
    raw.request(command(HostCmd.HELLO), 1)
    raw.send(encode(HostCmd.READ.value, 2, struct.pack("<2I", *read_command(Target.SPAD, 0, 200))))
    raw.close()
    # a host that dies half way through loading
    dev = Device.open(bridge.url)
    dev.hello()
    dev.attach(prog)
    cmds = prog.load_commands()
    dev._transfer(cmds[0])
    dev.close()
    # the next host finds the device answering, loads and runs bit-exactly
    _load_and_check(bridge.url, digits, 3)
    assert bridge.alive()


# ---- bad user input -----------------------------------------------------------------------------

def _one_line_error(capsys, argv, *needles):
    rc = host_main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err


def test_bad_input(capsys, bridge, digits, tmp_path):
    _one_line_error(capsys, ["run", "--sim", "--model", str(tmp_path / "nope")], "nope")
    _one_line_error(capsys, ["run", "--port", "/dev/ttyDOESNOTEXIST"], "cannot open",
                    "ttyDOESNOTEXIST")
    _one_line_error(capsys, ["run", "--port", "socket://127.0.0.1:1"], "cannot open")
    _one_line_error(capsys, ["run", "--sim", "--program", str(tmp_path / "x.program.json")],
                    "not found")
    _one_line_error(capsys, ["run"], "--port")
    # a program built for a 16x16 array, sent to the 8x8 one
    im, _ = digits_vit(CFG.replace(rows=16, cols=16), 0)
    path = compile_model(im, CFG.replace(rows=16, cols=16)).save(tmp_path / "p.program.json")
    _one_line_error(capsys, ["run", "--port", bridge.url, "--program", str(path)],
                    "other hardware", "rows 16 (device 8)")
