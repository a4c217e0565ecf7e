"""``python -m gen build``: AcceleratorConfig -> Verilog + RTLIL + ``<name>.json``.

The JSON beside the Verilog is the contract with ``sim/`` and ``host/``: the config, every derived
width, and each unit's ports with their stream payload layouts (field offsets generated from the
``data.Layout`` objects, never typed by hand).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from hw.config import AcceleratorConfig
from hw.dsp import Target
from hw.gelu import GeluUnit
from hw.harness import TimingHarness
from hw.layernorm import LayerNorm
from hw.requant import Requantizer
from hw.scratchpad import Sizes, hello_words
from hw.shiftgelu import ShiftGelu
from hw.softmax import Shiftmax
from hw.systolic import SystolicArray
from hw.top import Accelerator

__all__ = ["UNITS", "build", "layout_json", "BuiltUnit", "write_host_json", "write_timed_unit"]


def _gelu(cfg: AcceleratorConfig):
    if cfg.mode == "ivit":
        return ShiftGelu(lanes=cfg.lanes, in_bits=8, max_row=cfg.max_row)
    return GeluUnit(lanes=cfg.lanes, in_bits=cfg.abits)


# unit name -> constructor from the config; each becomes its own Verilog module and report row
UNITS = {
    "systolic": SystolicArray,
    "requant": Requantizer,
    "softmax": lambda cfg: Shiftmax(mode=cfg.mode, lanes=cfg.lanes, in_bits=8,
                                    max_row=cfg.max_row),
    "gelu": _gelu,
    "layernorm": lambda cfg: LayerNorm(mode=cfg.mode, lanes=cfg.lanes, in_bits=16,
                                       max_row=cfg.max_channels,
                                       split_engines=cfg.split_engines),
}


@dataclass(frozen=True)
class BuiltUnit:
    name: str
    top: str
    verilog: Path
    rtlil: Path


def layout_json(shape) -> dict:
    """A ``data.Layout`` (or plain shape) as JSON: width, signedness, fields with offsets."""
    if isinstance(shape, data.StructLayout):
        return {"kind": "struct", "width": shape.size,
                "fields": {n: {"offset": f.offset, **layout_json(f.shape)} for n, f in shape}}
    if isinstance(shape, data.ArrayLayout):
        return {"kind": "array", "width": shape.size, "length": shape.length,
                "element": layout_json(shape.elem_shape)}
    s = Shape.cast(shape)
    return {"kind": "int", "width": s.width, "signed": s.signed}


def ports_json(component: wiring.Component) -> dict:
    out = {}
    for name, member in component.signature.members.items():
        if member.is_port:
            out[name] = {"dir": member.flow.value, **layout_json(member.shape)}
        else:
            sig = member.signature
            out[name] = {"dir": member.flow.value, "stream": True,
                         "payload": layout_json(sig.members["payload"].shape)}
    return out


def _convert(component, top: str, cfg: AcceleratorConfig) -> tuple[str, str]:
    """RTLIL once, then Verilog from that RTLIL text (saves elaborating twice). Elaborated for
    the configuration's device family (on ECP5: products in MULT18X18D with their registers)."""
    from amaranth.back import rtlil, verilog
    target = Target(cfg.dev.family)
    il = rtlil.convert(component, name=top, platform=target)
    try:
        v = verilog._convert_rtlil_text(il, strip_internal_attrs=True)
    except (AttributeError, TypeError):        # private helper changed: elaborate again
        v = verilog.convert(component, name=top, platform=target)
    return il, v


def _write_unit(cfg: AcceleratorConfig, unit: str, out: Path) -> dict:
    t = time.perf_counter()
    component = UNITS[unit](cfg)
    top = f"{cfg.name}_{unit}"
    il, v = _convert(component, top, cfg)
    (out / f"{top}.il").write_text(il)
    (out / f"{top}.v").write_text(v)
    return {"top": top, "verilog": f"{top}.v", "rtlil": f"{top}.il",
            "ports": ports_json(component), "kib": len(v) // 1024,
            "seconds": round(time.perf_counter() - t, 2)}


def write_timed_unit(cfg: AcceleratorConfig, unit: str, out: Path) -> tuple[str, int]:
    """``<name>_<unit>_timed.v``: the unit inside a :class:`hw.harness.TimingHarness` (every port
    registered, so out-of-context place and route times every path). Returns the top module's
    name and the number of harness flip-flops."""
    harness = TimingHarness(UNITS[unit](cfg))
    top = f"{cfg.name}_{unit}_timed"
    _, v = _convert(harness, top, cfg)
    (Path(out) / f"{top}.v").write_text(v)
    return top, harness.port_bits


def _write_accelerator(cfg: AcceleratorConfig, sizes: Sizes, out: Path) -> dict:
    t = time.perf_counter()
    component = Accelerator(cfg, sizes)
    top = f"{cfg.name}_accelerator"
    il, v = _convert(component, top, cfg)
    (out / f"{top}.il").write_text(il)
    (out / f"{top}.v").write_text(v)
    return {"top": top, "verilog": f"{top}.v", "rtlil": f"{top}.il",
            "ports": ports_json(component), "sizes": asdict(sizes),
            "hello": hello_words(cfg, sizes, component.link), "kib": len(v) // 1024,
            "seconds": round(time.perf_counter() - t, 2)}


def build(cfg: AcceleratorConfig, out: Path, *, log=print, jobs: int | None = None,
          program=None) -> dict:
    """Write every unit's Verilog and RTLIL plus ``<name>.json`` into ``out``; with a compiled
    ``program`` (:class:`gen.compiler.Program`) also the whole accelerator, its memories sized for
    the program, and the program itself (``<name>.program.json``). Returns the JSON.

    Units are elaborated in parallel worker processes (``jobs``, default: one per CPU)."""
    from concurrent.futures import ProcessPoolExecutor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = jobs or min(len(UNITS), os.cpu_count() or 1)
    tasks = {u: (_write_unit, cfg, u, out) for u in UNITS}
    if program is not None:
        tasks["accelerator"] = (_write_accelerator, cfg, program.sizes(), out)
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            # the whole accelerator takes longest: start it first
            futures = {u: pool.submit(*tasks[u]) for u in sorted(tasks, key=lambda u: u !=
                                                                   "accelerator")}
            done = {u: f.result() for u, f in futures.items()}
    else:
        done = {u: fn(*a) for u, (fn, *a) in tasks.items()}
    for unit in tasks:
        info = done[unit]
        log(f"  {unit:11s} -> {info['verilog']} ({info.pop('kib')} KiB) in "
            f"{info.pop('seconds'):.1f} s")
    units = {u: done[u] for u in UNITS}
    doc = {"format": "dyad-build-1", "name": cfg.name, "config": cfg.to_dict(), "units": units}
    if program is not None:
        path = program.save(out / f"{cfg.name}.program.json")
        doc["accelerator"] = {**done["accelerator"], "program": path.name}
    (out / f"{cfg.name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    doc["seconds"] = time.perf_counter() - t0
    return doc


def write_host_json(cfg: AcceleratorConfig, program, out: Path, link, *, board=None) -> dict:
    """For a board build: ``<name>.program.json`` and ``<name>.json`` (config, memory sizes,
    the HELLO words the device will answer, the link, the board report) — what
    ``python -m host run --program`` loads and checks the device against."""
    out = Path(out)
    sizes = program.sizes()
    path = program.save(out / f"{cfg.name}.program.json")
    doc = {"format": "dyad-build-1", "name": cfg.name, "config": cfg.to_dict(),
           "accelerator": {"program": path.name, "sizes": asdict(sizes),
                           "hello": hello_words(cfg, sizes, link), "link": asdict(link)},
           "board": board}
    (out / f"{cfg.name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def summary(cfg: AcceleratorConfig) -> str:
    d = cfg.dev
    pe = " of fast-inner-product PEs" if cfg.pe == "fip" else ""
    return (f"{cfg.name}: {cfg.rows}x{cfg.cols} output-stationary array{pe}, "
            f"W{cfg.wbits}A{cfg.abits}, "
            f"K <= {cfg.kmax}, {cfg.acc_bits}-bit accumulators; {cfg.requant_lanes} requant lanes "
            f"({cfg.mbits}-bit mantissa), {cfg.lanes} vector lanes\n"
            f"  target {cfg.device}: {cfg.requant_dsps} DSPs for requantizers, {cfg.vector_dsps} "
            f"for vector units, {cfg.dsp_products} of the array's {cfg.array_multipliers} "
            f"multipliers in DSPs (of {d.dsps}), "
            f"{cfg.lut_products} in LUT multipliers (array ~{cfg.array_luts} LUTs of {d.luts}); "
            f"tiles stream back to back for K >= {cfg.tile_spacing}")
