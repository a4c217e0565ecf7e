"""Synthesis smoke test (yosys through YoWASP, seconds): the generated Verilog synthesises for ECP5
and the DSP budget really maps as planned — DSP PEs become MULT18X18D with their registers inside,
LUT PEs use none — and register replicas survive synthesis.
Place-and-route is a benchmark (python -m gen report), never part of the test run."""
import json

from gen import build, report
from hw.config import AcceleratorConfig


def test_array_dsp_mapping(tmp_path):
    # ecp5-85f has 156 DSPs; 8 requant lanes (one per column, 17-bit mantissas) reserve 24, the
    # 4-lane vector units 120, so 12 of the 32 PEs get DSPs, 20 LUTs
    cfg = AcceleratorConfig(rows=4, cols=8, lanes=4, kmax=64, mbits=17)
    assert (cfg.requant_dsps, cfg.vector_dsps) == (24, 120)
    assert (cfg.dsp_products, cfg.lut_products) == (12, 20)
    doc = build.build(cfg, tmp_path, log=lambda *_: None, jobs=1)
    _, cells = report.synthesize(cfg, tmp_path, "systolic", doc["units"]["systolic"]["top"],
                                 log=lambda *_: None)
    assert cells.get("MULT18X18D", 0) == 12
    assert cells.get("LUT4", 0) > 100 and cells.get("TRELLIS_FF", 0) > 100
    # products in DSP blocks keep their operands and result in the block's own registers
    netlist = json.loads((tmp_path / f"{doc['units']['systolic']['top']}.netlist.json")
                         .read_text())
    dsps = [c for mod in netlist["modules"].values() for c in mod["cells"].values()
            if c["type"] == "MULT18X18D"]
    assert len(dsps) == 12
    for c in dsps:
        assert {c["parameters"][p] for p in ("REG_INPUTA_CLK", "REG_INPUTB_CLK",
                                             "REG_OUTPUT_CLK")} == {"CLK0"}


def test_replicas_survive_synthesis(tmp_path):
    """yosys merges flip-flops with one input; KEEP_REPLICAS keeps pipeline.replicas apart."""
    from amaranth.back import verilog
    from amaranth.hdl import Cat, Module, Signal

    from hw.pipeline import KEEP_REPLICAS, replicas
    m = Module()
    d, x, o = Signal(8), Signal(32), Signal(32)
    copies = replicas(m, d, 4, "d")
    m.d.comb += o.eq(Cat(*(c ^ x[8 * k:8 * k + 8] for k, c in enumerate(copies))))
    (tmp_path / "rep.v").write_text(verilog.convert(m, ports=[d, x, o], name="rep"))

    def flip_flops(script):
        report.run_yosys([report._tool("yosys"), "-p",
                          f"read_verilog rep.v; {script}synth_ecp5 -top rep; "
                          f"tee -q -o stat.txt stat"], tmp_path, "yosys", tmp_path / "y.log",
                         log=lambda *_: None)
        return sum(int(ln.split()[0]) for ln in (tmp_path / "stat.txt").read_text().splitlines()
                   if ln.split()[1:] == ["TRELLIS_FF"])

    # (without KEEP_REPLICAS, yosys 0.70 leaves one 8-bit register of the four)
    assert flip_flops(f"{KEEP_REPLICAS}; ") == 32


def test_classic_abc_fallback_maps(tmp_path):
    """The mapping used when YoWASP's ABC9 dies silently (gen.report.run_yosys): each synth_ecp5
    split around the classic ``abc -lut 4:7`` still gives a complete LUT4 netlist."""
    from amaranth.back import verilog
    from amaranth.hdl import Module, Signal

    m = Module()
    a, b, o = Signal(16), Signal(16), Signal(17)
    m.d.sync += o.eq(a + (b ^ (a >> 3)))
    (tmp_path / "t.v").write_text(verilog.convert(m, ports=[a, b, o], name="t"))
    script = report.classic_abc("read_verilog t.v; synth_ecp5 -top t; tee -q -o stat.txt stat")
    assert "abc -lut 4:7" in script and "abc9" not in script
    report.run_tool([report._tool("yosys"), "-p", script], tmp_path, "yosys", tmp_path / "y.log",
                    log=lambda *_: None)
    cells = {ln.split()[1]: int(ln.split()[0]) for ln in
             (tmp_path / "stat.txt").read_text().splitlines() if len(ln.split()) == 2
             and ln.split()[0].isdigit()}
    assert cells.get("TRELLIS_FF") == 17 and cells.get("LUT4", 0) > 0
    assert not any(k.startswith("$") and k != "$scopeinfo" for k in cells), cells
