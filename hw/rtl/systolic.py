"""Output-stationary integer systolic GEMM array, its host-side streaming order, and its exact timing.

``SystolicGemm(rows, cols, in_bits, acc_bits)`` computes ``C = A (M x K) @ B (K x N)`` in signed
integers for any ``M, N, K``: the host cuts ``C`` into ``ceil(M/rows) * ceil(N/cols)`` output tiles
(*folds*) and streams each fold's operands through the array, ``K`` beats per fold.

Ports (Verilog names; ``clk`` and the synchronous active-high ``rst`` as well):

``operands`` (in, stream: ``operands__valid``, ``operands__ready``, ``operands__payload``)
    One beat per ``k`` of a fold: ``a`` (``rows`` signed ``in_bits`` lanes, the column
    ``A[m0:m0+rows, k]``), ``b`` (``cols`` lanes, the row ``B[k, n0:n0+cols]``), ``last`` (set on the
    fold's final ``k``). Lanes past the edge of ``A`` or ``B`` carry zeros. Lane ``i`` of ``a``
    occupies payload bits ``[i*in_bits, (i+1)*in_bits)``, then ``b`` likewise, then ``last``.
``results`` (out, stream)
    ``rows`` beats per fold, row ``i`` of the tile first to last: ``c`` (``cols`` signed
    ``acc_bits`` lanes, ``C[m0+i, n0:n0+cols]``) and ``last`` (set on the fold's final row).

Inside: row ``i`` of ``a`` is delayed by ``i`` registers and column ``j`` of ``b`` by ``j`` (the
skew), so PE ``(i, j)`` multiply-accumulates the beat accepted in cycle ``t`` at the clock edge
ending cycle ``t + i + j``. PE ``(0, 0)`` works on the accepted payload directly, so the array adds
no input latency. A PE's first MAC of a fold overwrites its accumulator instead of adding.
Accumulators wrap modulo ``2**acc_bits``.

Like SCALE-Sim's output-stationary model, folds do not overlap: after a fold's last beat,
``operands.ready`` stays low for ``rows + cols - 2`` cycles while the skew drains, so each fold
occupies exactly ``K + rows + cols - 2`` cycles of input. When PE ``(rows-1, cols-1)`` has made the
fold's last MAC, the tile is read out of the accumulators one row per cycle, overlapped with the
next fold (reading row ``i`` happens before the next fold's first MAC reaches row ``i``).
Backpressure on ``results`` freezes the whole array for that cycle (``operands.ready`` goes low
combinationally), so no result is ever lost or overwritten.

Timing (:func:`predicted_cycles`): with operands offered every cycle and results always accepted,
the cycles from the edge that accepts the first operand beat to the edge that hands over the last
result row are ``systolic_cycles(m, n, k, rows, cols, "os") + rows``: SCALE-Sim's output-stationary
count (``folds * (K + rows + cols - 2) - 1``) plus the ``rows`` cycles that read the last fold out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from amaranth.hdl import Array, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.errors import InputError
from hw.perf.systolic import systolic_cycles
from hw.rtl.kernel import KernelMixin, ParamSpec

__all__ = [
    "SystolicGemm",
    "predicted_cycles",
    "operand_beats",
    "assemble_results",
    "pack_operands",
    "unpack_results",
    "READOUT_CYCLES_PER_ROW",
]

READOUT_CYCLES_PER_ROW = 1
"""The results stream hands over one row of the ``rows x cols`` output tile per cycle."""


def operand_layout(rows: int, cols: int, in_bits: int) -> data.StructLayout:
    """Payload of the ``operands`` stream (field order = bit order, LSB first)."""
    return data.StructLayout(
        {"a": data.ArrayLayout(signed(in_bits), rows), "b": data.ArrayLayout(signed(in_bits), cols), "last": 1}
    )


def result_layout(cols: int, acc_bits: int) -> data.StructLayout:
    """Payload of the ``results`` stream (field order = bit order, LSB first)."""
    return data.StructLayout({"c": data.ArrayLayout(signed(acc_bits), cols), "last": 1})


class SystolicGemm(KernelMixin, wiring.Component):
    """Output-stationary ``rows x cols`` array of signed ``in_bits`` MACs into ``acc_bits`` (module docstring)."""

    KERNEL = "systolic_gemm"
    PARAMS = {
        "rows": ParamSpec(4, "PE rows (output rows per fold)", lo=1, hi=256),
        "cols": ParamSpec(4, "PE columns (output columns per fold)", lo=1, hi=256),
        "in_bits": ParamSpec(8, "operand width in bits, signed", choices=(4, 8)),
        "acc_bits": ParamSpec(32, "accumulator width in bits, signed, wraps", lo=8, hi=64),
    }
    WORK = ("m", "n", "k")
    DATAFLOW = "os"

    @classmethod
    def invocation_cycles(cls, params, work):
        return predicted_cycles(work["m"], work["n"], work["k"], params["rows"], params["cols"])

    @classmethod
    def cycles_formula(cls, params):
        return "ceil(m/rows) * ceil(n/cols) * (k + rows + cols - 2) - 1 + rows"

    @classmethod
    def example_work(cls, params):
        return {"m": params["rows"], "n": params["cols"], "k": params["rows"]}

    @classmethod
    def readout_cycles(cls, params):
        return READOUT_CYCLES_PER_ROW * params["rows"]

    @classmethod
    def check_combination(cls, params: dict[str, int]) -> None:
        if params["acc_bits"] < 2 * params["in_bits"]:
            raise InputError(
                f"{cls.KERNEL}: parameter acc_bits={params['acc_bits']} is too narrow for "
                f"in_bits={params['in_bits']} (needs >= {2 * params['in_bits']})"
            )

    #: Payload layout of the ``operands`` stream; the weight-stationary array swaps in its own.
    operand_layout = staticmethod(operand_layout)

    def __init__(self, rows: int = 4, cols: int = 4, in_bits: int = 8, acc_bits: int = 32):
        self.params = self.accept_params(rows=rows, cols=cols, in_bits=in_bits, acc_bits=acc_bits)
        self.rows, self.cols, self.in_bits, self.acc_bits = rows, cols, in_bits, acc_bits
        super().__init__(
            {
                "operands": In(stream.Signature(self.operand_layout(rows, cols, in_bits))),
                "results": Out(stream.Signature(result_layout(cols, acc_bits))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        skew = rows + cols - 2  # cycles from PE (0, 0) to PE (rows-1, cols-1)

        # Freeze everything while a result is offered and not taken: relative timing inside the
        # array never changes, so backpressure cannot corrupt a fold.
        enable = Signal()
        m.d.comb += enable.eq(~self.results.valid | self.results.ready)

        # Input gap after each fold's last beat (folds do not overlap, as in SCALE-Sim's OS model).
        gap = Signal(range(skew + 1))
        first = Signal(init=1)  # the next accepted beat opens a fold
        fire = Signal()
        m.d.comb += [
            self.operands.ready.eq(enable & (gap == 0)),
            fire.eq(self.operands.valid & self.operands.ready),
        ]
        payload = self.operands.payload
        with m.If(enable):
            with m.If(fire):
                m.d.sync += first.eq(payload.last)
                if skew:
                    with m.If(payload.last):
                        m.d.sync += gap.eq(skew)
            with m.Elif(gap != 0):
                m.d.sync += gap.eq(gap - 1)

        ctl, a_in, b_in = skewed_grid(m, enable, fire, first, payload, rows, cols)
        acc = [[Signal(signed(self.acc_bits), name=f"acc_{i}_{j}") for j in range(cols)] for i in range(rows)]
        for i in range(rows):
            for j in range(cols):
                c = ctl[i + j]
                with m.If(enable & c.valid):
                    m.d.sync += acc[i][j].eq(Mux(c.first, 0, acc[i][j]) + a_in[i][j] * b_in[i][j])

        # Readout: starts the cycle after PE (rows-1, cols-1) made the fold's last MAC.
        reading = Signal()
        row = Signal(range(rows))
        acc_rows = Array(Array(acc[i]) for i in range(rows))
        m.d.comb += [
            self.results.valid.eq(reading),
            self.results.payload.last.eq(row == rows - 1),
        ]
        m.d.comb += [self.results.payload.c[j].eq(acc_rows[row][j]) for j in range(cols)]
        with m.If(self.results.valid & self.results.ready):
            m.d.sync += row.eq(row + 1)
            with m.If(row == rows - 1):
                m.d.sync += [reading.eq(0), row.eq(0)]
        with m.If(enable & ctl[skew].valid & ctl[skew].last):
            m.d.sync += [reading.eq(1), row.eq(0)]
        return m


def skewed_grid(m: Module, enable: Signal, fire, first, payload, rows: int, cols: int) -> tuple[list, list, list]:
    """The output-stationary grid's inputs, shared by the plain and the streaming array: ``ctl[d]``, the (valid,
    first, last) of the beat accepted ``d`` cycles ago (PE ``(i, j)`` uses ``ctl[i + j]``), and ``a_in[i][j]`` /
    ``b_in[i][j]``, the operands reaching PE ``(i, j)`` (row ``i``'s A skewed by ``i``, then passed right one
    register per PE; column ``j``'s B skewed by ``j``, passed down)."""
    skew = rows + cols - 2
    ctl_layout = data.StructLayout({"valid": 1, "first": 1, "last": 1})
    ctl = [Signal(ctl_layout, name=f"ctl{d}") for d in range(skew + 1)]
    m.d.comb += [ctl[0].valid.eq(fire), ctl[0].first.eq(first), ctl[0].last.eq(payload.last)]
    with m.If(enable):
        m.d.sync += [ctl[d].eq(ctl[d - 1]) for d in range(1, skew + 1)]

    def delayed(value, depth: int, name: str):
        return delayed_by(m, enable, value, depth, name)

    a_edge = [delayed(payload.a[i], i, f"a{i}") for i in range(rows)]
    b_edge = [delayed(payload.b[j], j, f"b{j}") for j in range(cols)]
    a_in: list[list[Value]] = [[] for _ in range(rows)]
    b_in: list[list[Value]] = [[] for _ in range(rows)]
    for i in range(rows):
        for j in range(cols):
            a_in[i].append(a_edge[i] if j == 0 else delayed(a_in[i][j - 1], 1, f"a_{i}_{j - 1}"))
            b_in[i].append(b_edge[j] if i == 0 else delayed(b_in[i - 1][j], 1, f"b_{i - 1}_{j}"))
    return ctl, a_in, b_in


def delayed_by(m: Module, enable: Signal, value, depth: int, name: str):
    """``value`` through ``depth`` registers that advance while ``enable`` (a row's or column's skew); the
    registers are named ``<name>_d1`` ... (both arrays, output- and weight-stationary, build their skews so)."""
    for stage in range(depth):
        reg = Signal.like(value, name=f"{name}_d{stage + 1}")
        with m.If(enable):
            m.d.sync += reg.eq(value)
        value = reg
    return value


def _check_gemm(m: int, n: int, k: int, kernel: str = "systolic_gemm") -> None:
    for name, value in (("m", m), ("n", n), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{kernel}: GEMM size {name} must be a positive integer, got {value!r}")


def predicted_cycles(m: int, n: int, k: int, rows: int, cols: int) -> int:
    """Cycles :class:`SystolicGemm` takes for an ``(m x k) @ (k x n)`` product, exactly.

    Counted from the clock edge that accepts the first operand beat to the edge that hands over
    the last result row (an edge count, so a one-beat, one-PE product takes 1), with operands
    offered every cycle the array is ready and results always accepted::

        systolic_cycles(m, n, k, rows, cols, "os") + rows
        = ceil(m/rows) * ceil(n/cols) * (k + rows + cols - 2) - 1 + rows

    The first term is SCALE-Sim's output-stationary compute count: each fold takes ``k`` input
    cycles plus ``rows + cols - 2`` of skew, with no overlap between folds; its ``- 1`` is because
    PE ``(0, 0)`` works on the first beat in the cycle it is accepted (no input register), so the
    last MAC lands on the edge ``folds * (k + rows + cols - 2) - 1``. The extra terms:

    * ``+ rows``: the last fold's ``rows`` result rows leave one per cycle after its last MAC
      (``READOUT_CYCLES_PER_ROW``); earlier folds' readout is hidden under the next fold.
    * ``+ 0`` handshake: ``operands.ready`` and ``results.valid`` are not registered.

    Input bubbles or results backpressure add their own cycles on top (not modelled).
    """
    _check_gemm(m, n, k)
    return systolic_cycles(m, n, k, rows, cols, "os") + READOUT_CYCLES_PER_ROW * rows


# --- host side: the streaming order both the testbench and a driver use --------------------------


def fold_origins(m: int, n: int, rows: int, cols: int) -> list[tuple[int, int]]:
    """Top-left ``(m0, n0)`` of each output tile in streaming order (row-major over tiles)."""
    return [(m0, n0) for m0 in range(0, m, rows) for n0 in range(0, n, cols)]


def operand_beats(
    a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], rows: int, cols: int
) -> Iterator[tuple[list[int], list[int], bool]]:
    """The ``(a_lanes, b_lanes, last)`` beats that feed ``A @ B`` to the array, in order.

    ``a`` is ``M`` rows of ``K`` ints, ``b`` is ``K`` rows of ``N`` ints; lanes past the matrix edge
    are zero.
    """
    m, k, n = len(a), len(b), len(b[0])
    for m0, n0 in fold_origins(m, n, rows, cols):
        for kk in range(k):
            a_lanes = [a[m0 + i][kk] if m0 + i < m else 0 for i in range(rows)]
            b_lanes = [b[kk][n0 + j] if n0 + j < n else 0 for j in range(cols)]
            yield a_lanes, b_lanes, kk == k - 1


def assemble_results(result_rows: Sequence[Sequence[int]], m: int, n: int, rows: int, cols: int) -> list[list[int]]:
    """Rebuild ``C`` (``m x n``) from the result rows in the order the array produced them."""
    origins = fold_origins(m, n, rows, cols)
    if len(result_rows) != len(origins) * rows:
        raise ValueError(f"expected {len(origins) * rows} result rows, got {len(result_rows)}")
    c = [[0] * n for _ in range(m)]
    for f, (m0, n0) in enumerate(origins):
        for i in range(rows):
            for j in range(cols):
                if m0 + i < m and n0 + j < n:
                    c[m0 + i][n0 + j] = result_rows[f * rows + i][j]
    return c


def _pack(values: Sequence[int], bits: int) -> int:
    word, mask = 0, (1 << bits) - 1
    for index, value in enumerate(values):
        word |= (value & mask) << (index * bits)
    return word


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def pack_operands(a_lanes: Sequence[int], b_lanes: Sequence[int], last: bool, in_bits: int) -> int:
    """The ``operands__payload`` integer for one beat (two's complement lanes, LSB first)."""
    rows = len(a_lanes)
    return (
        _pack(a_lanes, in_bits)
        | _pack(b_lanes, in_bits) << (rows * in_bits)
        | int(last) << ((rows + len(b_lanes)) * in_bits)
    )


def unpack_results(word: int, cols: int, acc_bits: int) -> tuple[list[int], bool]:
    """``(c_lanes, last)`` from a ``results__payload`` integer."""
    lanes = [_signed(word >> (j * acc_bits), acc_bits) for j in range(cols)]
    return lanes, bool(word >> (cols * acc_bits) & 1)

