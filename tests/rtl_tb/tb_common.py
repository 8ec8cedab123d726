"""Shared cocotb plumbing for the kernel testbenches: job/result files, clock and reset, and a
cycle-counting stream driver.

The one definition of a kernel's measured cycles lives in :func:`stream_transfer`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

CLOCK_NS = 10


def load_job() -> dict:
    """The job JSON the host wrote for this run (path in ``$CODESIGN_TB_JOB``)."""
    with open(os.environ["CODESIGN_TB_JOB"]) as f:
        return json.load(f)


def write_result(result: object) -> None:
    """Hand ``result`` back to the host (path in ``$CODESIGN_TB_RESULT``)."""
    with open(os.environ["CODESIGN_TB_RESULT"], "w") as f:
        json.dump(result, f)


async def start(dut, inputs: Sequence[str] = (), reset_cycles: int = 2) -> None:
    """Start ``clk``, drive the input ports named in ``inputs`` to 0 (an undriven ``valid`` would
    be X and poison the state) and hold the synchronous ``rst`` high for ``reset_cycles`` edges."""
    for name in inputs:
        getattr(dut, name).value = 0
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    for _ in range(reset_cycles):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


@dataclass
class Transfer:
    """Result of :func:`stream_transfer`: payload words received, and the cycle count."""

    outputs: list[int]
    cycles: int
    first_in_edge: int
    last_out_edge: int


async def stream_transfer(
    dut,
    inp: str,
    out: str,
    words: Sequence[int],
    n_out: int,
    *,
    gap_prob: float = 0.0,
    stall_prob: float = 0.0,
    rng: random.Random | None = None,
    timeout: int = 100_000,
) -> Transfer:
    """Offer ``words`` on stream ``inp`` and collect ``n_out`` payloads from stream ``out``.

    Inputs are driven and handshakes sampled once per cycle, between rising edges: a transfer
    happens at a rising edge where ``valid & ready`` held. Edges are numbered from the first one
    this call sees. **Measured cycles** = (edge of the last output transfer) - (edge of the first
    input transfer): an edge difference, so a kernel that hands its result over one edge after
    accepting the input measures 1.

    With ``gap_prob``/``stall_prob`` the driver withholds ``valid`` (only while no beat is pending,
    as AXI requires) or drops ``ready`` at random, to test backpressure.
    """
    rng = rng or random.Random(0)
    i_valid, i_ready, i_data = (getattr(dut, f"{inp}__{s}") for s in ("valid", "ready", "payload"))
    o_valid, o_ready, o_data = (getattr(dut, f"{out}__{s}") for s in ("valid", "ready", "payload"))
    outputs: list[int] = []
    edge, index, pending = 0, 0, False
    first_in = last_out = None
    while len(outputs) < n_out:
        await FallingEdge(dut.clk)
        if not pending and index < len(words):
            pending = rng.random() >= gap_prob
        i_valid.value = int(pending)
        if pending:
            i_data.value = words[index]
        take = rng.random() >= stall_prob
        o_ready.value = int(take)
        await ReadOnly()
        if pending and i_ready.value:
            if first_in is None:
                first_in = edge
            index += 1
            pending = False
        if take and o_valid.value:
            outputs.append(int(o_data.value))
            last_out = edge
        edge += 1
        if edge > timeout:
            raise TimeoutError(f"{out}: {len(outputs)} of {n_out} outputs after {timeout} cycles")
    await FallingEdge(dut.clk)
    i_valid.value = 0
    o_ready.value = 0
    if index != len(words):
        raise AssertionError(f"{inp}: only {index} of {len(words)} inputs accepted")
    if first_in is None or last_out is None:
        raise AssertionError(f"{out}: no transfer ({len(words)} inputs, {len(outputs)} outputs)")
    return Transfer(outputs, last_out - first_in, first_in, last_out)
