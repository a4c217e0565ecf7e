"""``python -m gen <command>``: the Dyad generator's command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _accuracy(args) -> int:
    from . import accuracy
    return accuracy.main(args.model, args.percentile)


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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gen", description="Dyad generator")
    sub = ap.add_subparsers(dest="command", required=True)
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "model", None) is None and args.command == "accuracy":
        from .accuracy import DEFAULT_MODEL
        args.model = DEFAULT_MODEL
    try:
        return args.func(args)
    except (CliError, ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
