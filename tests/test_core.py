"""The accelerator core: compiler + ISA model against the golden model (fast), the whole
accelerator in amaranth.sim on a tiny model (fast), and under cocotb + Verilator on the digits ViT
and a BERT encoder layer (bit-exact, first differing tensor named on a mismatch)."""
import numpy as np
import pytest
from simstreams import wait_for

from gen import checkpoint, golden, isasim
from gen.accuracy import DEFAULT_MODEL
from gen.compiler import CompileError, command, compile_model, golden_tensors
from gen.data import digits_split
from gen.model import TransformerSpec, init_params
from gen.quantize import ActPolicy, quantize_model
from gen.workloads import bert_layer, digits_vit
from hw.config import AcceleratorConfig
from hw.isa import STATUS_OK, STATUS_WORDS, HostCmd, status_layout
from hw.link import LinkParams
from hw.scratchpad import Sizes, hello_words
from hw.top import Accelerator


def core_config(size: int, mode: str, **kw) -> AcceleratorConfig:
    return AcceleratorConfig(rows=size, cols=size, mode=mode, **{"kmax": 256, **kw})


def digits_model(mode: str, abits: int = 8):
    im, _ = digits_vit(core_config(8, mode, abits=abits), 0)
    return im, digits_split()[2]


def bert_model(mode: str):
    return bert_layer(core_config(8, mode, abits=16), 32)


def golden_jobs(im, prog, inputs):
    """(program inputs, golden outputs, golden tensors by program name) per input."""
    xs, outs, traces = [], [], []
    for b in range(len(inputs)):
        trace = {}
        out = golden.run(im, inputs[b:b + 1], trace=trace)[0]
        named = golden_tensors(prog, trace)
        xs.append(named[prog.input] if im.spec.kind == "bert" else inputs[b])
        outs.append(out)
        traces.append(named)
    return xs, outs, traces


# ---- compiler + ISA model ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["dyad", "ivit"])
@pytest.mark.parametrize("size", [8, 16])
def test_isa_model_digits(mode, size):
    im, x_test = digits_model(mode)
    prog = compile_model(im, core_config(size, mode))
    X = golden.quantize_input(im, x_test[:4])
    xs, outs, traces = golden_jobs(im, compile_model(im, core_config(size, mode), reuse=False), X)
    for x, want in zip(xs, outs):
        assert np.array_equal(isasim.run(prog, x), want[None])
    # every intermediate tensor, without scratchpad reuse
    flat = compile_model(im, core_config(size, mode), reuse=False)
    trace = {}
    isasim.run(flat, xs[0], trace)
    for name, want in traces[0].items():
        if name in trace:
            assert np.array_equal(trace[name], want), name
    assert prog.spad_words < flat.spad_words          # reuse saves scratchpad


@pytest.mark.parametrize("mode", ["dyad", "ivit"])
def test_isa_model_bert_layer(mode):
    im, ids = bert_model(mode)
    cfg = core_config(8, mode, abits=16)
    prog = compile_model(im, cfg)
    xs, outs, _ = golden_jobs(im, prog, ids[:3])
    for x, want in zip(xs, outs):
        assert np.array_equal(isasim.run(prog, x), want)


def test_compile_errors():
    im, _ = digits_model("dyad")
    with pytest.raises(CompileError, match="kmax = 32"):
        compile_model(im, core_config(8, "dyad", kmax=32))
    with pytest.raises(CompileError, match="mode 'dyad'.*'ivit'"):
        compile_model(im, core_config(8, "ivit"))
    wide, _ = digits_model("dyad", abits=16)                 # 16-bit attention probabilities
    with pytest.raises(CompileError, match=r"layers\.0\.probs is 16-bit.*--act-bits 16"):
        compile_model(wide, core_config(8, "dyad"))
    with pytest.raises(CompileError, match=r"spad: the program needs \d+ entries, the "
                                           r"accelerator has 1024 \(\d+ short\)"):
        compile_model(im, core_config(8, "dyad"), sizes=Sizes(spad=1024))
    with pytest.raises(CompileError, match="needs a square array"):
        compile_model(im, AcceleratorConfig(rows=8, cols=16, kmax=256))
    with pytest.raises(CompileError, match="4-bit weights"):
        w4, _ = _w4_digits()
        compile_model(w4, core_config(8, "dyad", wbits=4))
    with pytest.raises(CompileError, match="mantissa bits"):
        compile_model(im, core_config(8, "dyad", mbits=12))


def _w4_digits():
    spec, params = checkpoint.load(DEFAULT_MODEL)
    x_train = digits_split()[0][:64]
    return quantize_model(spec, params, x_train, wbits=4, policy=ActPolicy({"probs": 8})), None


# ---- whole accelerator, amaranth.sim -----------------------------------------------------------

TINY_SPEC = TransformerSpec(kind="vit", dim=8, heads=2, depth=1, mlp_dim=16, num_classes=3,
                            image_size=4, patch_size=2, channels=1)


@pytest.mark.parametrize("size, mode, lanes, requant_lanes, pe", [
    (4, "dyad", 4, 4, "mac"), (4, "ivit", 4, 4, "mac"), (4, "dyad", 2, 4, "mac"),
    (4, "ivit", 1, 4, "mac"), (4, "dyad", 4, 1, "mac"), (4, "ivit", 2, 2, "mac"),
    (2, "dyad", 2, 2, "mac"), (2, "ivit", 1, 1, "mac"), (4, "dyad", 2, 2, "fip"),
    (2, "ivit", 2, 2, "fip")])
def test_accelerator_amaranth_sim(size, mode, lanes, requant_lanes, pe):
    """A 4x4 (and the smallest, 2x2) accelerator runs a tiny ViT end to end through its host word
    stream (vector units and requantisers as wide as the array, or narrower: behind the lane
    gearboxes, or taking each word in parts; MAC or fast-inner-product PEs)."""
    from amaranth.sim import Simulator

    images = np.random.default_rng(0).random((64, 1, 4, 4)).astype(np.float32)
    im = quantize_model(TINY_SPEC, init_params(TINY_SPEC, seed=1), images, mode=mode,
                        policy=ActPolicy({"probs": 8}))
    cfg = core_config(size, mode, device="ecp5-25f", max_row=64, max_channels=64, lanes=lanes,
                      requant_lanes=requant_lanes, pe=pe)
    prog = compile_model(im, cfg)
    X = golden.quantize_input(im, images[:2])
    dut = Accelerator(cfg, prog.sizes())
    hello = hello_words(cfg, prog.sizes(), LinkParams())
    words = command(HostCmd.HELLO) + [w for cmd in prog.load_commands() for w in cmd]
    for b in range(2):
        words += (prog.input_commands(X[b]) + command(HostCmd.RUN, 0) + prog.output_command()
                  + command(HostCmd.STATUS))
    per_run = 1 + prog.reply_words(prog.output) + len(STATUS_WORDS)
    got = []

    async def host_in(ctx):
        for w in words:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, w)
            await wait_for(ctx, dut.i.ready, f"host word {w:#x} never accepted", 200_000)
        ctx.set(dut.i.valid, 0)

    async def host_out(ctx):
        ctx.set(dut.o.ready, 1)
        for _ in range(200_000):
            *_, payload, valid = await ctx.tick().sample(dut.o.payload, dut.o.valid)
            if valid:
                got.append(payload)
            if len(got) == len(hello) + 2 * per_run:
                return

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host_in)
    sim.add_testbench(host_out)
    sim.run()
    assert got[:len(hello)] == hello
    for b in range(2):
        reply = got[len(hello) + b * per_run:len(hello) + (b + 1) * per_run]
        status = status_layout.from_bits(reply[0])
        assert int(status.code) == STATUS_OK and int(status.pc) == len(prog.instrs)
        out = prog.decode(prog.output, reply[1:1 + prog.reply_words(prog.output)])
        assert np.array_equal(out, golden.run(im, X[b:b + 1])), (out, b)
        perf = dict(zip(STATUS_WORDS, reply[1 + prog.reply_words(prog.output):]))
        assert perf["status"] == reply[0] and perf["uptime"] > perf["cycles"] > 0
        assert perf["retired"] == len(prog.instrs)
        assert perf["array_beats"] == sum(
            -(-i.fields["m"] // cfg.rows) * -(-i.fields["n"] // cfg.cols) * i.fields["k"]
            for i in prog.instrs if i.fields["op"].name == "GEMM")


# ---- whole accelerator, cocotb + Verilator ------------------------------------------------------

def _run_digits(size, mode, n_images, lanes=0):
    from sim.core import run_on_core
    im, x_test = digits_model(mode)
    prog = compile_model(im, core_config(size, mode, lanes=lanes), reuse=False)
    X = golden.quantize_input(im, x_test[:n_images])
    xs, outs, traces = golden_jobs(im, prog, X)
    result = run_on_core(prog, xs, outs, traces)
    assert result["mismatches"] == 0 and result["images"] == n_images
    print(f"CORE digits {size}x{size} {mode} lanes {prog.cfg.lanes}: {n_images} images bit-exact, "
          f"{result['perf'][0]['cycles']} cycles/inference, "
          f"{result['sim_cycles'] / result['run_wall_s']:.0f} simulated cycles/s")


@pytest.mark.parametrize("size,mode,lanes", [(8, "dyad", 0), (8, "ivit", 0), (16, "dyad", 0),
                                             (16, "dyad", 4)])
def test_core_digits(size, mode, lanes):
    _run_digits(size, mode, 5, lanes)


def test_core_names_first_differing_tensor():
    """A wrong golden value makes the bench fail and name the tensor (the check can fail)."""
    from sim.core import run_on_core
    from sim.runner import BenchFailed
    im, x_test = digits_model("dyad")
    prog = compile_model(im, core_config(8, "dyad"), reuse=False)
    X = golden.quantize_input(im, x_test[:1])
    xs, outs, traces = golden_jobs(im, prog, X)
    traces[0]["layers.1.fc1"] = traces[0]["layers.1.fc1"].copy()
    traces[0]["layers.1.fc1"][3, 5] += 1
    outs[0] = outs[0] + 1
    with pytest.raises(BenchFailed, match=r"image 0: output .* first differing tensor: "
                                          r"layers\.1\.fc1 \(first at \(3, 5\)"):
        run_on_core(prog, xs, outs, traces, tag="_mismatch")


@pytest.mark.slow
@pytest.mark.parametrize("size,mode", [(8, "dyad"), (8, "ivit"), (16, "dyad"), (16, "ivit")])
def test_core_digits_100(size, mode):
    _run_digits(size, mode, 100)


@pytest.mark.parametrize("mode", ["dyad"])
def test_core_bert_layer(mode):
    from sim.core import run_on_core
    im, ids = bert_model(mode)
    prog = compile_model(im, core_config(8, mode, abits=16), reuse=False)
    xs, outs, traces = golden_jobs(im, prog, ids[:1])
    result = run_on_core(prog, xs, outs, traces)
    assert result["mismatches"] == 0
