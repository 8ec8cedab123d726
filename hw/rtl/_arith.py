"""Integer datapath pieces shared by the non-GEMM kernels (private).

Each builder adds logic to an Amaranth ``Module`` and returns the Values it made. The arithmetic is
written once here so that every kernel computes, e.g., I-ViT's shift exponential the same way:

* :func:`shift_exp`: I-ViT ``int_exp_shift`` (combinational);
* :class:`SeqDivider`: restoring division, one quotient bit per cycle (fixed latency);
* :func:`long_div_steps`: the same division unrolled, for pipelined dividers;
* :func:`round_half_even_shr`: ``round_half_even(p / 2**e)`` for a variable ``e >= 1``;
* :func:`exp2_q15`: the base-2 table exponential of the Softermax-style softmax;
* :class:`RowMaxBuffer`: a row-max unit's row memory, element counter and the LOAD state that fills them.

Bit widths are computed from value bounds in Python, so every intermediate is exact for every
input the ports can carry.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib.memory import Memory

from hw.errors import InputError

SUM_MAX = (1 << 31) - 1
"""I-ViT's ``2**31 - 1``: the clamp of exponential sums and the numerator of every reciprocal."""


def check_count(kernel: str, name: str, value: int) -> None:
    """``InputError`` unless ``value`` (a count of rows, tokens, ...) is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{kernel}: {name} must be a positive integer, got {value!r}")


def bits_for(hi: int) -> int:
    """Bits of an unsigned value in ``[0, hi]``."""
    return max(1, int(hi).bit_length())


def sbits_for(lo: int, hi: int) -> int:
    """Bits of a signed value in ``[lo, hi]``."""
    return max(int(lo).bit_length(), int(hi).bit_length()) + 1


def shift_exp(m: Module, x: Value, x0: Value, n: int, x0_bits: int, neg_q: int = 0, name: str = "exp"):
    """I-ViT ``int_exp_shift`` of ``x`` with ``x0 = floor(-1/scale)`` (``-2**x0_bits < x0 <= -1``).

    Steps (as :func:`compiler.numerics.shift_exp`)::

        x  = x + (x >> 1) - (x >> 4);  x = max(x, n * x0)
        q  = floor(x / x0);  r = x - x0 * q
        e  = ((r - 2 * x0) << (n - q)) >> 1

    ``q`` comes from a small combinational restoring division of ``|x|`` by ``a = -x0``: inputs
    ``x <= 0`` have ``q = floor(|x| / a)`` in ``[0, n]`` (``neg_q = 0`` suffices); positive inputs
    (ShiftGELU's ``e^(-max)``) have ``q = -ceil(x / a)``, resolved down to ``-neg_q``. Returns
    ``(e, over)``: ``over`` is set when ``q < -neg_q``, where ``e`` is not computed (the caller saturates).
    """
    xs = x.shape()
    w = xs.width + 3
    x1 = Signal(signed(w), name=f"{name}_x1")
    m.d.comb += x1.eq(x + (x >> 1) - (x >> 4))
    lo = Signal(signed(x0_bits + 6), name=f"{name}_lo")
    m.d.comb += lo.eq(x0 * n)
    x2 = Signal(signed(max(w, x0_bits + 6)), name=f"{name}_x2")
    m.d.comb += x2.eq(Mux(x1 < lo, lo, x1))
    a = Signal(unsigned(x0_bits), name=f"{name}_a")  # |x0|
    m.d.comb += a.eq(-x0)
    neg = Signal(name=f"{name}_neg")
    m.d.comb += neg.eq(x2 <= 0)
    mag = Signal(unsigned(x2.shape().width), name=f"{name}_mag")
    m.d.comb += mag.eq(Mux(neg, -x2, x2))
    over = Signal(name=f"{name}_over")
    m.d.comb += over.eq(~neg & (x2 > a * neg_q) if neg_q else 0)
    # floor(mag / a): exact while mag < a * 2**qbits, i.e. always for x <= 0 and whenever not `over`.
    qbits = max(n, neg_q, 1).bit_length()
    rem, quot = mag, []
    for i in reversed(range(qbits)):
        take = Signal(name=f"{name}_take{i}")
        m.d.comb += take.eq(rem >= (a << i))
        nxt = Signal(unsigned(x2.shape().width), name=f"{name}_rem{i}")
        m.d.comb += nxt.eq(Mux(take, rem - (a << i), rem))
        rem = nxt
        quot.insert(0, take)
    f = Signal(unsigned(qbits), name=f"{name}_f")
    m.d.comb += f.eq(Cat(*quot))
    inexact = Signal(name=f"{name}_inexact")
    m.d.comb += inexact.eq(rem != 0)
    # x <= 0: q = f, r = -rem. x > 0: q = -(f + inexact), r = rem - a when inexact, else 0.
    v = Signal(unsigned(x0_bits + 2), name=f"{name}_v")  # r - 2*x0 = r + 2a, in (a, 2a]
    m.d.comb += v.eq(Mux(neg, 2 * a - rem, Mux(inexact, rem + a, 2 * a)))
    amount = Signal(range(n + neg_q + 1), name=f"{name}_shift")
    m.d.comb += amount.eq(Mux(over, 0, Mux(neg, n - f, n + f + inexact)))
    e = Signal(unsigned(x0_bits + 2 + n + neg_q), name=name)
    m.d.comb += e.eq((v << amount) >> 1)
    return e, over


class SeqDivider:
    """Unsigned restoring division ``num // den``, one quotient bit per clock edge.

    ``quot_bits`` steps compute a quotient known to be below ``2**quot_bits`` (the caller
    guarantees ``num < den * 2**quot_bits``). ``load(num, den)`` (sync statements) starts it;
    each ``step()`` edge shifts one bit in; after ``quot_bits`` steps ``quot`` and ``rem`` hold
    the result. ``next_quot`` / ``next_rem`` are the combinational results of the step being
    taken, so the edge of the last step can already use the final quotient.
    """

    def __init__(self, m: Module, name: str, num_bits: int, den_bits: int, quot_bits: int):
        self.quot_bits = quot_bits
        self.rem = Signal(unsigned(den_bits + 1), name=f"{name}_rem")
        self.den = Signal(unsigned(den_bits), name=f"{name}_den")
        self.low = Signal(unsigned(quot_bits), name=f"{name}_low")  # numerator bits still to bring down
        self.quot = Signal(unsigned(quot_bits), name=f"{name}_quot")
        self.count = Signal(range(quot_bits + 1), name=f"{name}_count")
        trial = Signal(unsigned(den_bits + 2), name=f"{name}_trial")
        take = Signal(name=f"{name}_take")
        m.d.comb += [trial.eq(Cat(self.low[-1], self.rem)), take.eq(trial >= self.den)]
        self.next_rem = Signal(unsigned(den_bits + 1), name=f"{name}_next_rem")
        self.next_quot = Signal(unsigned(quot_bits), name=f"{name}_next_quot")
        m.d.comb += [
            self.next_rem.eq(Mux(take, trial - self.den, trial)),
            self.next_quot.eq(Cat(take, self.quot[:-1])),
        ]
        self.num_bits = num_bits

    def load(self, num: Value, den: Value) -> list:
        """Sync statements that start ``num // den``."""
        q = self.quot_bits
        if isinstance(num, int):
            num = Const(num, unsigned(max(self.num_bits, num.bit_length())))
        return [
            self.rem.eq(num >> q),
            self.low.eq(num[:q]),
            self.den.eq(den),
            self.quot.eq(0),
            self.count.eq(q),
        ]

    def step(self) -> list:
        """Sync statements for one quotient bit."""
        return [
            self.rem.eq(self.next_rem),
            self.quot.eq(self.next_quot),
            self.low.eq(self.low << 1),
            self.count.eq(self.count - 1),
        ]

    @property
    def last_step(self) -> Value:
        """High during the cycle whose edge takes the final step."""
        return self.count == 1

    def run_into(self, m: Module, result: Signal, next_state: str) -> None:
        """Body of an FSM state that waits for the division: one step per cycle; with the last, the quotient goes
        into ``result`` and the FSM moves to ``next_state``."""
        m.d.sync += self.step()
        with m.If(self.last_step):
            m.d.sync += result.eq(self.next_quot)
            m.next = next_state


def long_div_steps(m: Module, rem: Value, quot: Value, den: Value, num_bits_msb_first: list[int], name: str):
    """Combinational restoring-division steps: bring down each constant numerator bit in turn.

    Returns ``(rem, quot)`` after the steps; ``quot`` grows by one bit per step. Every step's
    remainder is a named Signal: Amaranth does not share repeated subexpressions, so a chain of
    bare expressions would double in size at each step.
    """
    width = den.shape().width + 1
    for step, bit in enumerate(num_bits_msb_first):
        trial = Signal(unsigned(width + 1), name=f"{name}_trial{step}")
        m.d.comb += trial.eq(Cat(Const(bit, 1), rem))
        take = Signal(name=f"{name}_take{step}")
        m.d.comb += take.eq(trial >= den)
        rem = Signal(unsigned(width), name=f"{name}_rem{step}")
        m.d.comb += rem.eq(Mux(take, trial - den, trial))
        quot = Cat(take, quot)  # pyright: ignore[reportAssignmentType] - Cat of Values is a Value; amaranth types it IOConcat | Concat
    return rem, quot


def round_half_even_shr(m: Module, p: Value, e: Value, name: str) -> Value:
    """``round_half_even(p / 2**e)`` for signed ``p`` and unsigned ``1 <= e <= p.width - 2``."""
    width = p.shape().width
    q = Signal(signed(width), name=f"{name}_q")
    m.d.comb += q.eq(p >> e)
    mask = Signal(unsigned(width), name=f"{name}_mask")
    m.d.comb += mask.eq((Const(1, unsigned(width + 1)) << e) - 1)
    rem = Signal(unsigned(width), name=f"{name}_rem")
    m.d.comb += rem.eq(p.as_unsigned() & mask)
    half = Signal(unsigned(width), name=f"{name}_half")
    m.d.comb += half.eq(mask.as_unsigned() ^ (mask >> 1))
    up = Signal(name=f"{name}_up")
    m.d.comb += up.eq((rem > half) | ((rem == half) & q[0]))
    out = Signal(signed(width + 1), name=name)
    m.d.comb += out.eq(q + up)
    return out


EXP2_FRAC_BITS = 8
"""F of :mod:`compiler.numerics.base2`: fraction bits of the log2-domain values."""
EXP2_LUT: tuple[int, ...] = tuple(round(2.0 ** (j / 16) * (1 << 15)) for j in range(17))
"""``T[j] = round(2**15 * 2**(j/16))``, the same table as ``compiler.numerics.EXP2_LUT``."""


def exp2_q15(m: Module, u: Value, mx: Value, name: str = "exp2") -> Value:
    """Q1.15 ``2**(u / 2**F - mx)`` floored, for ``u / 2**F <= mx`` (base2's table exponential)::

        d = u - mx * 2**F;  k = -(d >> F);  f = d & (2**F - 1);  i, t = f >> 4, f & 15
        p = T[i] + (((T[i+1] - T[i]) * t) >> 4);  e = p >> min(k, 20)
    """
    width = max(u.shape().width, mx.shape().width + EXP2_FRAC_BITS) + 2
    d = Signal(signed(width), name=f"{name}_d")
    m.d.comb += d.eq(u - (mx << EXP2_FRAC_BITS))
    k = Signal(unsigned(width), name=f"{name}_k")
    m.d.comb += k.eq(-(d >> EXP2_FRAC_BITS))
    f = d[:EXP2_FRAC_BITS]
    i, t = f[4:], f[:4]
    lo_tab = Array(Const(v, unsigned(17)) for v in EXP2_LUT[:16])
    step_tab = Array(Const(EXP2_LUT[j + 1] - EXP2_LUT[j], unsigned(12)) for j in range(16))
    p = Signal(unsigned(17), name=f"{name}_p")
    m.d.comb += p.eq(lo_tab[i] + ((step_tab[i] * t) >> 4))
    e = Signal(unsigned(17), name=name)
    m.d.comb += e.eq(p >> Mux(k > 20, 20, k[:5]))
    return e


class RowMaxBuffer:
    """The row a two-phase row unit (Shiftmax, row-max ShiftGELU) buffers while finding its max.

    Adds the row memory (submodule ``row``: written at ``idx`` while loading, read combinationally at ``idx``),
    the element counter ``idx`` (``at_end`` on a row's last element) and ``row_max``. Call :meth:`load` inside the
    unit's LOAD state; the states after it walk ``idx`` over the buffered row. ``length`` (a Value in ``[1, n]``)
    makes rows that many elements long instead of ``n`` (a unit whose row length is set at run time).
    """

    def __init__(self, m: Module, n: int, in_bits: int, data: Value, length: Value | None = None):
        m.submodules.row = row = Memory(shape=signed(in_bits), depth=n, init=[])
        self.wr = row.write_port()
        self.rd = row.read_port(domain="comb")
        self.idx = Signal(range(n), name="idx")
        self.at_end = self.idx == (n - 1 if length is None else length - 1)
        self.row_max = Signal(signed(in_bits), name="row_max")
        m.d.comb += [self.rd.addr.eq(self.idx), self.wr.addr.eq(self.idx), self.wr.data.eq(data)]

    def load(self, m: Module, ready: Value, valid: Value, x: Value, next_state: str) -> None:
        """The LOAD state: accept ``x`` on every ``valid`` beat into the memory, track the max, and go to
        ``next_state`` (``idx`` back at 0) after the row's last element."""
        idx, row_max = self.idx, self.row_max
        m.d.comb += ready.eq(1)
        with m.If(valid):
            m.d.comb += self.wr.en.eq(1)
            m.d.sync += [row_max.eq(Mux((idx == 0) | (x > row_max), x, row_max)), idx.eq(idx + 1)]
            with m.If(self.at_end):
                m.d.sync += idx.eq(0)
                m.next = next_state
