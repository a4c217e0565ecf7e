"""cocotb + Verilator benches of the hardware units against numpy / gen.intops, bit-exact.

Default run: the configurations the issue names (4x4, 8x8, 16x16 and a non-square array across
W4A8/W8A8/W8A16; requantizers with 4 and 16 lanes). ``-m slow`` adds a wider sweep.
"""
import pytest

from hw.config import AcceleratorConfig
from hw.requant import Requantizer
from hw.systolic import SystolicArray
from sim.runner import build_dir_for, run_cocotb

ARRAYS = [
    dict(rows=4, cols=4, wbits=8, abits=8, kmax=64),
    dict(rows=8, cols=8, wbits=4, abits=8, kmax=128),
    dict(rows=16, cols=16, wbits=8, abits=8, kmax=256),       # 156 DSP + 100 LUT multipliers
    dict(rows=6, cols=10, wbits=8, abits=16, kmax=64),
    dict(rows=16, cols=16, wbits=8, abits=8, kmax=256, pe="fip"),   # 135 DSP + 9 LUT multipliers
    dict(rows=5, cols=6, wbits=4, abits=16, kmax=64, pe="fip"),
]
ARRAYS_SLOW = [
    dict(rows=16, cols=16, wbits=8, abits=16, kmax=512),
    dict(rows=12, cols=4, wbits=4, abits=16, kmax=1024),
    dict(rows=2, cols=16, wbits=8, abits=8, kmax=33),
    dict(rows=8, cols=8, wbits=8, abits=8, kmax=4096, device="ecp5-25f"),
]


def _array(kw):
    cfg = AcceleratorConfig(**kw)
    run_cocotb(SystolicArray(cfg), "systolic", "sim.bench_systolic",
               build_dir_for("systolic", cfg.to_dict()), env={"DYAD_CONFIG": cfg.to_json()})


def _requant(kw):
    cfg = AcceleratorConfig(**kw)
    run_cocotb(Requantizer(cfg), "requant", "sim.bench_requant",
               build_dir_for("requant", cfg.to_dict()), env={"DYAD_CONFIG": cfg.to_json()})


def _array_id(kw):
    return "{rows}x{cols}_w{wbits}a{abits}".format(**kw) + ("_fip" if kw.get("pe") == "fip" else "")


@pytest.mark.parametrize("kw", ARRAYS, ids=_array_id)
def test_array(kw):
    _array(kw)


@pytest.mark.slow
@pytest.mark.parametrize("kw", ARRAYS_SLOW,
                         ids=lambda kw: "{rows}x{cols}_w{wbits}a{abits}_k{kmax}".format(**kw))
def test_array_sweep(kw):
    _array(kw)


@pytest.mark.parametrize("kw", [dict(rows=4, cols=4, lanes=4, mbits=31),
                                dict(rows=2, cols=16, lanes=16, mbits=18, abits=16)],
                         ids=["lanes4_m31", "lanes16_m18"])
def test_requant(kw):
    _requant(kw)


VECTOR_UNITS = [
    ("gelu", dict(lanes=1, in_bits=8)),
    ("gelu", dict(lanes=16, in_bits=16)),
    ("shiftgelu", dict(lanes=4, in_bits=8, max_row=64), "ecp5"),
    ("shiftgelu", dict(lanes=1, in_bits=16, max_row=16)),
    ("shiftmax", dict(mode="dyad", lanes=1, in_bits=8, max_row=24)),
    ("shiftmax", dict(mode="dyad", lanes=16, in_bits=8, max_row=200), "ecp5"),
    ("shiftmax", dict(mode="ivit", lanes=4, in_bits=8, max_row=64)),
    ("shiftmax", dict(mode="ivit", lanes=16, in_bits=16, max_row=200)),
    ("layernorm", dict(mode="dyad", lanes=16, in_bits=16, max_row=384), "ecp5"),
    ("layernorm", dict(mode="ivit", lanes=4, in_bits=16, max_row=64)),
    ("layernorm", dict(mode="dyad", lanes=1, in_bits=8, max_row=16)),
]


VECTOR_CASES = [(u, a, f[0] if f else None) for u, a, *f in VECTOR_UNITS]


@pytest.mark.parametrize("unit, args, family", VECTOR_CASES,
                         ids=[f"{u}_{'_'.join(f'{k}{v}' for k, v in a.items())}"
                              + (f"_{f}" if f else "") for u, a, f in VECTOR_CASES])
def test_vector_unit(unit, args, family):
    """``family``: elaborated for that FPGA family, i.e. with its DSP primitives (registered
    MULT18X18D on ECP5) simulated through their models instead of the generic products."""
    import json

    from hw.dsp import Target
    from hw.gelu import GeluUnit
    from hw.layernorm import LayerNorm
    from hw.shiftgelu import ShiftGelu
    from hw.softmax import Shiftmax
    from sim.runner import PRIMITIVE_MODELS
    ctor = {"gelu": GeluUnit, "shiftgelu": ShiftGelu, "shiftmax": Shiftmax,
            "layernorm": LayerNorm}[unit]
    platform = Target(family) if family else None
    run_cocotb(ctor(**args), unit, "sim.bench_vector",
               build_dir_for(unit, {**args, **({"family": family} if family else {})}),
               env={"DYAD_UNIT": unit, "DYAD_UNIT_ARGS": json.dumps(args)},
               platform=platform, sources=PRIMITIVE_MODELS[family] if family else ())


@pytest.mark.parametrize("width, depth, family", [(1, 2, None), (37, 100, None),
                                                  (36, 1024, "ecp5"), (19, 300, "ecp5"),
                                                  (18, 1025, "ecp5"), (40, 2100, "ecp5")])
def test_registered_read_memory(width, depth, family):
    """The row buffers' memory: DP16KD blocks with their output registers on ECP5 (through the
    block's model; deeper than one block: banks of them, the last one partly used), a fabric
    memory and register elsewhere."""
    from hw.bram import RegisteredReadMemory
    from hw.dsp import Target
    from sim.runner import PRIMITIVE_MODELS
    args = {"width": width, "depth": depth, **({"family": family} if family else {})}
    run_cocotb(RegisteredReadMemory(width, depth), "bram", "sim.bench_bram",
               build_dir_for("bram", args), env={"DYAD_WIDTH": str(width),
                                                 "DYAD_DEPTH": str(depth)},
               platform=Target(family) if family else None,
               sources=PRIMITIVE_MODELS[family] if family else ())
