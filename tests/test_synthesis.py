"""Synthesis smoke test (yosys through YoWASP, seconds): the generated Verilog synthesises for ECP5
and the DSP budget really maps as planned — DSP PEs become MULT18X18D, LUT PEs use none.
Place-and-route is a benchmark (python -m gen report), never part of the test run."""
from gen import build, report
from hw.config import AcceleratorConfig


def test_array_dsp_mapping(tmp_path):
    # ecp5-85f has 156 DSPs; 4 requant lanes reserve 24, the vector units 120, so 12 of the 32
    # PEs get DSPs, 20 LUTs
    cfg = AcceleratorConfig(rows=4, cols=8, lanes=4, kmax=64)
    assert (cfg.requant_dsps, cfg.vector_dsps) == (24, 120)
    assert (cfg.dsp_products, cfg.lut_products) == (12, 20)
    doc = build.build(cfg, tmp_path, log=lambda *_: None, jobs=1)
    _, cells = report.synthesize(cfg, tmp_path, "systolic", doc["units"]["systolic"]["top"],
                                 log=lambda *_: None)
    assert cells.get("MULT18X18D", 0) == 12
    assert cells.get("LUT4", 0) > 100 and cells.get("TRELLIS_FF", 0) > 100
