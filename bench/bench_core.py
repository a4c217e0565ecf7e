"""Whole-model performance of the accelerator core, measured in cocotb + Verilator.

Runs the digits ViT (or the BERT encoder layer of the tests) on the simulated accelerator, one RUN
per layer, and prints per configuration: cycles per inference and per layer, the cycles each
unit kind was busy, whole-model array utilisation (MACs / (PEs x cycles)), the ratio to the
MAC-bound ideal (cycles / (MACs / PEs)) and the simulator's speed. Every inference is also checked
bit-exactly against the golden model (the run fails otherwise).

    python bench/bench_core.py                     # 8x8 and 16x16, dyad, 2 images
    python bench/bench_core.py --array 8x8 --mode ivit --row-units 4 --images 5
    python bench/bench_core.py --bert --act-bits 16
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gen import golden  # noqa: E402
from gen.compiler import compile_model, golden_tensors  # noqa: E402
from gen.workloads import bert_layer, digits_vit  # noqa: E402
from hw.config import AcceleratorConfig  # noqa: E402
from sim.core import run_on_core  # noqa: E402


def measure(cfg, bert: bool, n: int) -> dict:
    im, inputs = (bert_layer if bert else digits_vit)(cfg, n)
    prog = compile_model(im, cfg)
    xs, outs = [], []
    for b in range(n):
        trace = {}
        outs.append(golden.run(im, inputs[b:b + 1], trace=trace)[0])
        xs.append(golden_tensors(prog, trace)[prog.input] if bert else inputs[b])
    t = time.perf_counter()
    res = run_on_core(prog, xs, outs, segmented=True, tag="_bench")
    perf = res["perf"][0]
    pes = cfg.rows * cfg.cols
    ideal = prog.macs / pes
    return {"cfg": cfg, "macs": prog.macs, "perf": perf, "ideal": ideal,
            "util": prog.macs / (pes * perf["cycles"]), "ratio": perf["cycles"] / ideal,
            "sim_rate": res["sim_cycles"] / res["run_wall_s"], "wall": time.perf_counter() - t,
            "images": n, "spad": prog.spad_words, "instrs": len(prog.instrs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--array", action="append", help="RxC (repeatable; default 8x8 and 16x16)")
    ap.add_argument("--mode", default="dyad", choices=("dyad", "ivit"))
    ap.add_argument("--act-bits", type=int, default=8)
    ap.add_argument("--row-units", type=int, default=None)
    ap.add_argument("--lanes", type=int, default=None, help="vector lanes (default: cols)")
    ap.add_argument("--requant-lanes", type=int, default=None,
                    help="requantizers in the drain (default: cols)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--bert", action="store_true", help="the BERT encoder layer (seq 16, dim 64)")
    args = ap.parse_args(argv)
    rows = []
    for arr in args.array or ["8x8", "16x16"]:
        r, c = (int(v) for v in arr.split("x"))
        kw = {"row_units": args.row_units} if args.row_units else {}
        kw.update({"lanes": args.lanes} if args.lanes else {})
        kw.update({"requant_lanes": args.requant_lanes} if args.requant_lanes else {})
        try:
            cfg = AcceleratorConfig(rows=r, cols=c, kmax=256, mode=args.mode,
                                    abits=args.act_bits, **kw)
        except ValueError as exc:
            print(f"-- {arr}: skipped: {exc}")
            continue
        print(f"-- {arr} {args.mode} W{cfg.wbits}A{cfg.abits} row_units={cfg.row_units} "
              f"lanes={cfg.lanes} requant_lanes={cfg.requant_lanes}: "
              f"building and simulating ...", flush=True)
        res = measure(cfg, args.bert, args.images)
        p = res["perf"]
        print(f"   {res['images']} inferences bit-exact; {res['instrs']} instructions, "
              f"{res['spad']} scratchpad words; {res['wall']:.0f} s")
        print(f"   cycles/inference {p['cycles']}  MACs {res['macs']}  MAC-bound ideal "
              f"{res['ideal']:.0f}  ratio {res['ratio']:.2f}x  array utilisation "
              f"{100 * res['util']:.1f} %")
        print("   per layer: " + ", ".join(f"{k} {v}" for k, v in p["layers"].items()))
        print(f"   busy cycles: GEMM {p['gemm_cycles']}, Shiftmax {p['softmax_cycles']}, "
              f"GELU {p['gelu_cycles']}, LayerNorm {p['layernorm_cycles']}; array beats "
              f"{p['array_beats']}, A starved {p['a_starved']}, B starved {p['b_starved']}")
        print(f"   simulator: {res['sim_rate']:.0f} cycles/s")
        rows.append(res)
    print("\n| array | lanes | requant lanes | mode | cycles/inference | ideal | ratio "
          "| array util | GEMM | Shiftmax | GELU | LayerNorm | sim cycles/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for res in rows:
        c, p = res["cfg"], res["perf"]
        print(f"| {c.rows}x{c.cols} | {c.lanes} | {c.requant_lanes} | {c.mode} | {p['cycles']} | "
              f"{res['ideal']:.0f} | {res['ratio']:.2f}x | {100 * res['util']:.1f} % | "
              f"{p['gemm_cycles']} | "
              f"{p['softmax_cycles']} | {p['gelu_cycles']} | {p['layernorm_cycles']} | "
              f"{res['sim_rate']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
