"""``python -m gen <command>``: the Dyad generator's command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _accuracy(args) -> int:
    from . import accuracy
    return accuracy.main(args.model or accuracy.DEFAULT_MODEL, args.percentile)


def _ops_error(args) -> int:
    from . import ops_error
    return ops_error.main()


def _quantize(args) -> int:
    from . import checkpoint
    from .accuracy import DEFAULT_MODEL
    from .data import digits_split
    from .quantize import quantize_model

    spec, params = checkpoint.load(args.model or DEFAULT_MODEL)
    if spec.kind != "vit" or spec.image_size != 8:
        raise CliError("quantize calibrates on digits images: give an 8x8 ViT checkpoint")
    im = quantize_model(spec, params, digits_split()[0], mode=args.mode, wbits=args.wbits)
    path = im.save(args.out)
    print(f"wrote {path.with_suffix('.npz')} and {path.with_suffix('.json')}")
    return 0


def config_from_args(args, default=None):
    """The AcceleratorConfig the command-line options describe."""
    import re

    from hw.config import PRESETS, AcceleratorConfig, ConfigError

    if args.preset:
        if args.preset not in PRESETS:
            raise CliError(f"--preset {args.preset!r}: unknown; known: {', '.join(PRESETS)}")
        base = PRESETS[args.preset]
    else:
        base = default or AcceleratorConfig(rows=16, cols=16)
    kw = {}
    if args.array is not None:
        match = re.fullmatch(r"(\d+)x(\d+)", args.array)
        if not match:
            raise CliError(f"--array {args.array!r}: expected ROWSxCOLS, e.g. 16x16")
        kw.update(rows=int(match[1]), cols=int(match[2]))
    if args.bits is not None:
        if args.bits not in (4, 8):
            raise CliError(f"--bits {args.bits}: must be 4 or 8 (use --act-bits 16 for 16-bit "
                           f"activations)")
        kw["wbits"] = args.bits
    for name in ("act_bits", "kmax", "lanes", "requant_lanes", "mbits", "device", "mode",
                 "row_units", "array_dsps", "pe", "split_engines"):
        value = getattr(args, name)
        if value is not None:
            kw["abits" if name == "act_bits" else name] = value
    try:
        return base.replace(**kw) if kw else base
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def int_model(cfg, model_path):
    """The model to compile: a saved IntModel (``.json``), or a checkpoint directory quantised
    here for ``cfg`` (ViT: calibrated on the digits training split; BERT: on seeded random
    token ids). Default: the built-in digits ViT."""
    import numpy as np

    from . import checkpoint
    from .accuracy import DEFAULT_MODEL
    from .compiler import policy_for
    from .quantize import IntModel, quantize_model

    path = Path(model_path) if model_path else DEFAULT_MODEL
    if path.suffix == ".json" or path.with_suffix(".npz").is_file():
        im = IntModel.load(path)
        if im.mode != cfg.mode:
            raise CliError(f"--model {path}: quantised for mode {im.mode!r}, building "
                           f"{cfg.mode!r} (use --mode {im.mode})")
        return im, path
    if not (path / "config.json").is_file():
        raise CliError(f"--model {path}: not a checkpoint directory (no config.json) or an "
                       f"IntModel .json")
    spec, params = checkpoint.load(path)
    if spec.kind == "vit":
        if spec.image_size != 8 or spec.channels != 1:
            raise CliError(f"--model {path}: ViT checkpoints are calibrated on the 8x8 digits; "
                           f"quantise others yourself and pass the IntModel .json")
        from .data import digits_split
        samples = digits_split()[0]
    else:
        samples = np.random.default_rng(0).integers(0, spec.vocab_size, (64, spec.seq_len))
    im = quantize_model(spec, params, samples, mode=cfg.mode, mbits=cfg.mbits,
                        policy=policy_for(cfg))
    return im, path


def _build(args) -> int:
    import time

    from . import build
    from .compiler import compile_model

    t0 = time.perf_counter()
    board = _board(args)
    cfg = config_from_args(args, board and _board_default(board))
    out = args.out or Path("build") / (cfg.name + (f"_{board.name}" if board else ""))
    print(build.summary(cfg))
    program = None
    if args.model != "none":
        im, path = int_model(cfg, args.model)
        try:
            program = compile_model(im, cfg)
        except ValueError as exc:
            raise CliError(f"{exc} (--model none builds the units alone)") from None
        sz = program.sizes()
        print(f"  program for {path}: {len(program.instrs)} instructions, {program.macs} MACs; "
              f"scratchpad {program.spad_words} of {sz.spad} words, requant table "
              f"{len(program.ptab)}, vector table {len(program.vtab)}")
    if board is not None:
        if program is None:
            raise CliError("--board needs a model to run (drop --model none)")
        from .boards import build_board
        core_hz = round(args.clock_mhz * 1e6) if args.clock_mhz else None
        build_board(board, cfg, program, out, core_hz=core_hz, seed=args.seeds,
                    synth_only=args.synth_only)
        print(f"wrote {out} in {time.perf_counter() - t0:.0f} s")
        return 0
    doc = build.build(cfg, out, program=program)
    extra = " + the accelerator and its program" if program is not None else ""
    print(f"wrote {out}/{cfg.name}.json and {len(doc['units'])} units (Verilog + RTLIL){extra} "
          f"in {time.perf_counter() - t0:.1f} s")
    if args.report:
        from . import report
        report.main_report(cfg, out, doc, seeds=args.seeds, units=args.unit)
    return 0


def _board(args):
    """The ``--board`` named (its part becomes the device), or None."""
    if not getattr(args, "board", None):
        return None
    from .boards import BOARDS
    if args.board not in BOARDS:
        raise CliError(f"--board {args.board!r}: unknown; known: {', '.join(BOARDS)}")
    board = BOARDS[args.board]
    if args.device not in (None, board.device):
        raise CliError(f"--device {args.device} conflicts with --board {board.name} "
                       f"({board.device})")
    args.device = board.device
    return board


def _board_default(board):
    """A board's own preset, on its part."""
    from hw.config import PRESETS
    return PRESETS[board.preset].replace(device=board.device)


def add_config_args(p, array_default: str = "16x16"):
    """The options that describe an accelerator configuration."""
    p.add_argument("--preset", default=None, help="start from a named preset")
    p.add_argument("--array", default=None, metavar="RxC",
                   help=f"array size (default {array_default})")
    p.add_argument("--bits", type=int, default=None, help="weight bits, 4 or 8 (default 8)")
    p.add_argument("--act-bits", type=int, default=None, help="activation bits, 8 or 16")
    p.add_argument("--kmax", type=int, default=None, help="largest K (default 4096)")
    p.add_argument("--lanes", type=int, default=None, help="vector lanes (default: cols)")
    p.add_argument("--requant-lanes", type=int, default=None,
                   help="requantizers in the drain (default: cols; fewer take each word in parts)")
    p.add_argument("--mbits", type=int, default=None, help="requant mantissa bits (8..31)")
    p.add_argument("--device", default=None, help="ecp5-25f | ecp5-45f | ecp5-85f | ice40-up5k")
    p.add_argument("--mode", default=None, help="numeric mode of the nonlinear units: dyad | ivit")
    p.add_argument("--row-units", type=int, default=None,
                   help="parallel copies of each row unit (Shiftmax, LayerNorm; default 2)")
    p.add_argument("--pe", default=None, choices=("mac", "fip"),
                   help="array processing element: mac (default) | fip (fast inner product: "
                        "half the multipliers, with per-row/column corrections)")
    p.add_argument("--split-engines", action="store_true", default=None,
                   help="LayerNorm's wide engines at two cycles per bit: a faster unit clock, "
                        "slower rows shorter than max_channels")
    p.add_argument("--array-dsps", type=int, default=None, metavar="N",
                   help="at most N array products in DSP blocks (default: all the requantizers "
                        "and vector units leave; 0: LUT multipliers only)")


def _add_build_args(p):
    add_config_args(p)
    p.add_argument("--out", type=Path, default=None, help="output directory (default build/NAME)")
    p.add_argument("--seeds", type=int, default=1, help="place-and-route seeds (median reported)")
    p.add_argument("--unit", action="append", default=None,
                   help="report only this unit (repeatable)")


class Parser(argparse.ArgumentParser):
    def error(self, message):          # one line, no usage dump
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m gen", description="Dyad generator")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("build", help="write Verilog, RTLIL and <name>.json for a configuration")
    _add_build_args(p)
    p.add_argument("--report", action="store_true", help="also run yosys + nextpnr")
    p.add_argument("--board", default=None, help="build a bitstream for a board: ulx3s-85f, "
                   "ulx3s-45f, ulx3s-25f, icebreaker (its preset unless --array/--preset)")
    p.add_argument("--clock-mhz", type=float, default=None,
                   help="with --board: core clock (PLL output; default per board)")
    p.add_argument("--synth-only", action="store_true",
                   help="with --board: stop after synthesis and the fit check")
    p.add_argument("--model", default=None,
                   help="checkpoint directory or IntModel .json to size the accelerator for and "
                        "compile (default: the built-in digits ViT; 'none': units only)")
    p.set_defaults(func=_build)
    p = sub.add_parser("report", help="build, then LUT/FF/DSP/BRAM/Fmax from yosys + nextpnr")
    _add_build_args(p)
    p.set_defaults(func=_build, report=True, model="none")
    p = sub.add_parser("accuracy", help="float vs integer-only top-1 on the digits test split")
    p.add_argument("--model", type=Path, default=None, help="checkpoint directory "
                   "(default: the built-in digits ViT)")
    p.add_argument("--percentile", type=float, default=None,
                   help="calibrate activation ranges with this percentile of |x| (default absmax)")
    p.set_defaults(func=_accuracy)
    p = sub.add_parser("ops-error", help="max/mean error of every integer operator vs float")
    p.set_defaults(func=_ops_error)
    p = sub.add_parser("quantize", help="quantize a digits checkpoint and save the IntModel")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--mode", choices=("ivit", "dyad"), default="dyad")
    p.add_argument("--wbits", type=int, choices=(4, 8), default=8)
    p.add_argument("--out", type=Path, default=Path("build/digits_int"))
    p.set_defaults(func=_quantize)
    return ap


def run_cli(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse, run the command; a user error is one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CliError, ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        # includes gen.compiler.CompileError (a ValueError): what does not fit, by how much,
        # and host.LinkError (a RuntimeError): which port, what went wrong
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
