"""A registered product: ``p = a * b`` two cycles after ``a`` and ``b``, in the form a DSP block
holds whole: its operands registered, then the product registered.

Elaborated for ECP5 (a platform whose ``family`` is ``"ecp5"``: an amaranth-boards board, or
:class:`Target` for out-of-context builds), a product that fits one 18×18 multiplier becomes a
MULT18X18D with its input and output registers on (``REG_INPUTA/B_CLK``, ``REG_OUTPUT_CLK``), so
the multiplier is never in a path with fabric routing on both sides. yosys maps a ``*`` onto a
MULT18X18D with every register off and never moves fabric registers into it, so without this the
path is register → route → multiplier → route → register.

Everywhere else (simulation, iCE40, products that do not fit) the same two register steps are
built in the fabric around a ``*``: the behaviour and latency are the same, which is what the
simulations check. The primitive's port wiring is checked against a model of its documented
register behaviour (``sim/models/MULT18X18D.v``) under Verilator.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed, unsigned

__all__ = ["Target", "LATENCY", "PORT_BITS", "family", "product", "uses_primitive"]

LATENCY = 2
PORT_BITS = 18


@dataclass(frozen=True)
class Target:
    """The FPGA family gateware is elaborated for, passed as Amaranth's ``platform`` when a
    design is converted outside a board (``gen build``, ``gen report``)."""
    family: str


def family(platform) -> str | None:
    """The FPGA family ``platform`` elaborates for (``None``: generic, e.g. simulation)."""
    return getattr(platform, "family", None)


def uses_primitive(platform, a, b) -> bool:
    """Whether ``product(platform, a, b)`` becomes one MULT18X18D with its registers on (each
    operand, signed or not, at most 18 bits: the block's ``SIGNEDA``/``SIGNEDB`` say which)."""
    return (family(platform) == "ecp5"
            and len(a) <= PORT_BITS and len(b) <= PORT_BITS)


def product(m: Module, platform, a, b, name: str):
    """``a * b`` (``len(a) + len(b)`` bits, signed if either is) ``LATENCY`` cycles later:
    ``a`` and ``b`` registered, then their product (free-running, like every datapath here)."""
    signed_p = a.shape().signed or b.shape().signed
    p = Signal((signed if signed_p else unsigned)(len(a) + len(b)), name=name)
    if uses_primitive(platform, a, b):
        ports = {"i_CLK0": ClockSignal(), "i_CE0": Const(1),
                 "i_RST0": Const(0), "i_SIGNEDA": Const(int(a.shape().signed)),
                 "i_SIGNEDB": Const(int(b.shape().signed)),
                 "i_SOURCEA": Const(0), "i_SOURCEB": Const(0)}
        wide_a, wide_b = Signal(PORT_BITS, name=f"{name}_a"), Signal(PORT_BITS, name=f"{name}_b")
        m.d.comb += [wide_a.eq(a), wide_b.eq(b)]            # sign- or zero-extended to the port
        full = Signal(2 * PORT_BITS, name=f"{name}_p")
        for k in range(PORT_BITS):
            ports[f"i_A{k}"], ports[f"i_B{k}"], ports[f"i_C{k}"] = wide_a[k], wide_b[k], Const(0)
        for k in range(2 * PORT_BITS):
            ports[f"o_P{k}"] = full[k]
        m.submodules[f"{name}_dsp"] = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
            p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_GSR="DISABLED", p_RESETMODE="SYNC", **ports)
        m.d.comb += p.eq(full[:len(p)])
        return p
    a_q, b_q = Signal.like(a, name=f"{name}_a"), Signal.like(b, name=f"{name}_b")
    m.d.sync += [a_q.eq(a), b_q.eq(b), p.eq(a_q * b_q)]
    return p
