"""cocotb bench for the whole accelerator (:class:`hw.top.Accelerator`): a compiled model runs
through the host word stream exactly as the host runtime drives it, bit-exact against
:mod:`gen.golden`.

``$DYAD_CORE_JOB`` names a pickle written by :func:`write_job`: the :class:`~gen.compiler.Program`,
the inputs, the golden outputs and (for programs compiled without scratchpad reuse) the golden
traces. Per input: WRITE the input, RUN, READ the output, STATUS. On a mismatch every tensor is
read back and compared with the golden trace, and the first differing one is named. The bench
prints one ``CORE`` line per inference (cycles, counters) and the simulator's cycles per second.
"""
from __future__ import annotations

import json
import os
import pickle
import time

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from gen.compiler import command
from hw.isa import PERF_COUNTERS, STATUS_OK, STATUS_WORDS, HostCmd, status_layout
from hw.link import LinkParams
from hw.scratchpad import hello_words
from sim.streams import TB

__all__ = ["WordHost"]


class WordHost:
    """Sends and receives 32-bit words on ``i``/``o``. Only wakes per cycle while a transfer is
    in progress, so a long RUN costs no Python time per simulated cycle."""

    def __init__(self, dut, clock):
        self.dut, self.clock = dut, clock
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        self.cycles = 0

    async def send(self, words):
        dut = self.dut
        for w in words:
            await FallingEdge(self.clock)
            dut.i__payload.value = w
            dut.i__valid.value = 1
            while True:
                await ReadOnly()
                if dut.i__ready.value:
                    break
                await FallingEdge(self.clock)
        await FallingEdge(self.clock)
        dut.i__valid.value = 0

    async def recv(self, n: int) -> list[int]:
        dut, out = self.dut, []
        await FallingEdge(self.clock)
        dut.o__ready.value = 1
        while len(out) < n:
            await ReadOnly()
            if dut.o__valid.value:
                out.append(int(dut.o__payload.value))
                await FallingEdge(self.clock)
            else:
                await RisingEdge(dut.o__valid)
                await FallingEdge(self.clock)
        dut.o__ready.value = 0
        return out

    async def transact(self, words, n):
        await self.send(words)
        return await self.recv(n)


def _first_mismatch(prog, replies: dict, trace: dict) -> str:
    """The first tensor (in program order) whose integers differ from the golden trace."""
    for name, got in replies.items():
        want = trace.get(name)
        if want is not None and want.shape == got.shape and not np.array_equal(want, got):
            bad = np.argwhere(want != got)[0]
            return (f"{name} (first at {tuple(int(i) for i in bad)}: got {got[tuple(bad)]}, "
                    f"want {want[tuple(bad)]})")
    return "no intermediate tensor differs (the output read-back itself?)"


@cocotb.test()
async def run_model(dut):
    with open(os.environ["DYAD_CORE_JOB"], "rb") as f:
        job = pickle.load(f)
    prog = job["program"]
    tb = TB(dut)
    host = WordHost(dut, tb.clock)
    await tb.reset()
    want = hello_words(prog.cfg, prog.sizes(), LinkParams())
    hello = await host.transact(command(HostCmd.HELLO), len(want))
    assert hello == want, f"HELLO mismatch: {hello}"
    t0 = time.perf_counter()
    segmented = job.get("segmented", False)
    await host.send([w for cmd in prog.load_commands(segmented) for w in cmd])
    starts = prog.imem(segmented)[1]
    names = [s[0] for s in prog.segments()] if segmented else ["all"]
    failures, sim_cycles, wall, perfs = [], 0, 0.0, []
    for n, (x, want) in enumerate(zip(job["inputs"], job["expected"])):
        await host.send(prog.input_commands(x))
        perf, layers = {k: 0 for k in PERF_COUNTERS}, {}
        for name, pc in zip(names, starts):
            t = time.perf_counter()
            reply = await host.transact(command(HostCmd.RUN, pc), 1)
            wall += time.perf_counter() - t
            status = status_layout.from_bits(reply[0])
            assert int(status.code) == STATUS_OK, f"image {n}: status {reply[0]:#x}"
            assert int(status.errors) == 0, f"image {n}: unit error flags {int(status.errors):#x}"
            words = await host.transact(command(HostCmd.STATUS), len(STATUS_WORDS))
            layers[name] = {k: v for k, v in zip(STATUS_WORDS, words) if k in PERF_COUNTERS}
            perf = {k: perf[k] + layers[name][k] for k in PERF_COUNTERS}
        out = prog.decode(prog.output, await host.transact(prog.output_command(),
                                                           prog.reply_words(prog.output)))
        sim_cycles += perf["cycles"]
        perfs.append({**perf, "layers": {k: v["cycles"] for k, v in layers.items()}})
        dut._log.info("CORE image=%d %s", n, " ".join(f"{k}={v}" for k, v in perf.items()))
        if not np.array_equal(out, np.asarray(want).reshape(out.shape)):
            where = "(compile without reuse to locate)"
            if job["traces"] is not None:
                replies = {}
                for name in prog.tensors:
                    if name.startswith("embed.") or name.endswith(".w"):
                        continue
                    words = await host.transact(prog.tensor_command(name), prog.reply_words(name))
                    replies[name] = prog.decode(name, words)
                where = _first_mismatch(prog, replies, job["traces"][n])
            failures.append(f"image {n}: output {out.tolist()} != golden "
                            f"{np.asarray(want).tolist()}; first differing tensor: {where}")
    dut._log.info("CORE_SUMMARY images=%d mismatches=%d sim_cycles=%d run_wall_s=%.2f "
                  "cycles_per_s=%.0f load_s=%.2f", len(job["inputs"]), len(failures), sim_cycles,
                  wall, sim_cycles / max(wall, 1e-9), time.perf_counter() - t0 - wall)
    summary = {"images": len(job["inputs"]), "mismatches": len(failures), "failures": failures,
               "perf": perfs,
               "sim_cycles": sim_cycles, "run_wall_s": wall,
               "load_s": time.perf_counter() - t0 - wall}
    with open(os.environ["DYAD_CORE_JOB"] + ".result.json", "w") as f:
        json.dump(summary, f)
    assert not failures, "\n".join(failures)
