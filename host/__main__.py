"""``python -m host run``: run a model on a Dyad accelerator — a board on a serial port, or the
simulated design through the bridge (``--sim``) — and check every output against the golden
model.

    python -m host run --sim --array 8x8 --images 20
    python -m host run --sim --pins --images 20          # the board's UART top, pin level
    python -m host run --port /dev/ttyUSB1 --program build/NAME/NAME.program.json --images 100
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from gen.__main__ import (
    CliError,
    Parser,
    add_config_args,
    config_from_args,
    int_model,
    run_cli,
)
from hw.config import AcceleratorConfig

from .device import Device

SIM_DEFAULT = AcceleratorConfig(rows=8, cols=8)


def _program(args, cfg):
    """(program, its integer model): ``--program`` (built for the model by ``gen build``), or
    the model compiled here for ``cfg``."""
    from gen.compiler import Program, compile_model
    if args.program is None:
        im, _ = int_model(cfg, args.model)
        return compile_model(im, cfg), im
    try:
        prog = Program.load(args.program)
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"--program {args.program}: {exc}") from None
    return prog, int_model(prog.cfg, args.model)[0]


def _inputs(args, im, prog):
    """(program inputs, golden outputs or None, labels or None)."""
    from gen.compiler import golden_io
    if args.input is not None:
        path = Path(args.input)
        if not path.is_file():
            raise CliError(f"--input {path}: no such file")
        raw = np.load(path)
        labels = None
    else:
        if im.spec.kind != "vit":
            raise CliError("--images takes digits test images (a ViT); give a BERT model its "
                           "token ids with --input IDS.npy")
        from gen import golden
        from gen.data import digits_split
        _, _, x_test, y_test = digits_split()
        raw = golden.quantize_input(im, x_test[:args.images])
        labels = y_test[:args.images]
    xs, want = golden_io(im, prog, raw)
    return xs, want, labels


def _run(args) -> int:
    cfg = config_from_args(args, SIM_DEFAULT)
    if (args.port is None) == (not args.sim):
        raise CliError("give --port URL (a board, a pty or socket://HOST:PORT) or --sim")
    prog, im = _program(args, cfg)
    cfg = prog.cfg
    xs, want, labels = _inputs(args, im, prog)

    bridge = None
    url = args.port
    if args.sim:
        from sim.bridge import PINS_LINK, Bridge
        if args.pins:
            bridge = Bridge(cfg, prog.sizes(), PINS_LINK, pty=args.pty, pins=True).start()
        else:
            bridge = Bridge(cfg, prog.sizes(), pty=args.pty).start()
        url = bridge.url
        print(f"simulation bridge for {cfg.rows}x{cfg.cols} {cfg.mode} at {url}"
              + (f" (UART pins, {bridge.link.baud} baud from {bridge.link.clk_hz / 1e6:g} MHz)"
                 if args.pins else ""))
    try:
        return _session(args, url, prog, xs, want, labels)
    finally:
        if bridge is not None:
            bridge.stop()


def _session(args, url, prog, xs, want, labels) -> int:
    dev = Device.open(url, baud=args.baud, timeout=args.timeout)
    try:
        info = dev.hello()
        dev.attach(prog)
        print(f"device: {info['rows']}x{info['cols']} W{info['wbits']}A{info['abits']} "
              f"{'ivit' if info['ivit'] else 'dyad'}, scratchpad {info['spad']} words, link "
              f"buffer {info['link_buffer']} B at {info['baud']} baud, clock "
              f"{info['clk_hz'] / 1e6:g} MHz")
        t0 = time.monotonic()
        sent = dev.load()
        print(f"loaded {sent} bytes of program and constants in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        exact, correct, cycles = 0, 0, []
        for n, x in enumerate(xs):
            out = dev.infer(x)
            cycles.append(dev.perf()["cycles"])
            ok = np.array_equal(out.reshape(-1), np.asarray(want[n]).reshape(-1))
            exact += ok
            line = f"input {n}: "
            if labels is not None:
                pred = int(np.argmax(out.reshape(-1)))
                correct += pred == labels[n]
                line += f"class {pred} (label {labels[n]}) "
            if args.verbose or not ok:
                print(line + ("bit-exact" if ok else f"MISMATCH: {out.reshape(-1).tolist()} vs "
                              f"golden {np.asarray(want[n]).reshape(-1).tolist()}"))
        wall = time.monotonic() - t0
        st = dev.link.stats
        print(f"{exact}/{len(xs)} outputs bit-exact vs gen.golden"
              + (f"; top-1 {correct}/{len(xs)}" if labels is not None else "")
              + f"; {np.mean(cycles):.0f} device cycles per inference; {len(xs) / wall:.1f} "
              f"inferences/s (wall); link: {st.requests} requests, {st.retries} retries")
        return 0 if exact == len(xs) else 1
    finally:
        dev.close()


def build_parser():
    ap = Parser(prog="python -m host", description="Dyad host runtime")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("run", help="run a model on a board (--port) or the simulator (--sim)")
    p.add_argument("--port", default=None, help="serial device, pty path or socket://HOST:PORT")
    p.add_argument("--sim", action="store_true",
                   help="build (cached) and start the Verilator bridge for the configuration")
    p.add_argument("--pty", action="store_true", help="with --sim: serve a pty, not TCP")
    p.add_argument("--pins", action="store_true", help="with --sim: simulate the board's UART "
                   "top, bit by bit on its pins at 3 Mbaud timing (default: the byte streams)")
    p.add_argument("--program", type=Path, default=None,
                   help="a compiled <name>.program.json (default: compile --model here)")
    p.add_argument("--model", default=None, help="checkpoint directory or IntModel .json "
                   "(default: the built-in digits ViT)")
    p.add_argument("--images", type=int, default=20, help="digits test images to run")
    p.add_argument("--input", default=None, help="a .npy of model inputs instead (ViT: integer "
                   "patches [N, T, C]; BERT: token ids [N, T])")
    p.add_argument("--baud", type=int, default=3_000_000, help="serial line rate")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds of silence before a "
                   "request is repeated")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per input")
    add_config_args(p, "8x8")
    p.set_defaults(func=_run)
    return ap


def main(argv=None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
