"""The cds1 ISA (hw/isa, docs/ISA.md): encoding round trips, decoding any word safely, listings, token checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hw.errors import InputError
from hw.isa import (
    Config,
    ConfigReg,
    Deps,
    Gemm,
    Halt,
    Load,
    Nop,
    Program,
    Queue,
    Space,
    Store,
    Vec,
    VecFn,
    check_tokens,
    decode,
    encode,
    from_bytes,
    listing,
    parse_listing,
    to_bytes,
)
from hw.isa.instructions import field_names

DOC = (Path(__file__).resolve().parents[1] / "docs" / "ISA.md").read_text()


def _fields(cls, **fixed):
    """A strategy for valid instances of ``cls``: every field drawn from its documented range."""
    kwargs = {}
    for name, _, width in cls.LAYOUT:
        lo, hi = cls.RANGES.get(name, (0, (1 << width) - 1))
        enum = cls.ENUMS.get(name)
        if enum is not None:
            kwargs[name] = st.sampled_from([e for e in enum if lo <= e <= hi])
        else:
            kwargs[name] = st.integers(lo, hi)
    kwargs.update(fixed)  # strategies
    return st.builds(cls, **kwargs)


_DEPS = st.builds(Deps, st.booleans(), st.booleans(), st.booleans(), st.booleans())
INSTRUCTIONS = st.one_of(
    st.just(Halt()),
    _fields(Load, deps=st.builds(Deps, st.just(False), st.booleans(), st.just(False), st.booleans())),
    _fields(Store, deps=st.builds(Deps, st.booleans(), st.just(False), st.booleans(), st.just(False))),
    _fields(Gemm, deps=_DEPS),
    _fields(Vec, deps=_DEPS),
    _fields(Config, deps=_DEPS),
    st.builds(Nop, st.just(Queue.EXECUTE), _DEPS, st.integers(0, 1), st.integers(0, 65535)),
)


@given(INSTRUCTIONS)
def test_encode_decode_round_trip(instr) -> None:
    word = encode(instr)
    assert len(word) == 16
    assert decode(word) == instr


@given(st.binary(min_size=16, max_size=16))
def test_any_word_decodes_to_a_valid_instruction_or_one_line_error(word: bytes) -> None:
    try:
        instr = decode(word, 7)
    except InputError as err:
        assert "\n" not in str(err) and str(err).startswith("instruction 7: ")
    else:
        assert encode(instr) == word  # nothing in a valid word is ignored


@given(st.lists(INSTRUCTIONS.filter(lambda i: not isinstance(i, Halt)), max_size=12), st.integers(0, 2**32 - 1))
def test_program_file_and_listing_round_trip(instrs, dram: int) -> None:
    program = Program((*instrs, Halt()), dram)
    assert from_bytes(to_bytes(program)) == program
    assert parse_listing(listing(program)) == program


def test_layouts_match_the_specification() -> None:
    """Every field's bit range in docs/ISA.md is the one the encoder uses, and no two fields overlap."""
    for cls in (Load, Gemm, Vec, Config, Nop):
        taken = 0xFF  # opcode and dependency flags
        for name, lo, width in cls.LAYOUT:
            mask = ((1 << width) - 1) << lo
            assert not taken & mask, f"{cls.__name__}.{name} overlaps another field"
            taken |= mask
            assert lo + width <= 128
            assert re.search(rf"\| `\[{lo}, {lo + width}\)` \| `{name}` \|", DOC), f"{cls.__name__}.{name}"


def test_listing_is_readable() -> None:
    program = Program((
        Load(space=Space.SP, row=0, rows=16, cols=64, elem_log2=0, dram=4096, stride=64, transpose=1,
             deps=Deps(push_next=True)),
        Gemm(dataflow=0, accumulate=0, a_row=0, b_row=64, c_row=0, m=16, n=64, k=64,
             deps=Deps(pop_prev=True, push_next=True)),
        Config(reg=ConfigReg.SHIFTMAX_X0, value=-42),
        Vec(fn=VecFn.REQUANT, src_space=Space.ACC, src=0, dst_space=Space.SP, dst=128, rows=16, n=64, out_log2=3),
        Store(space=Space.SP, row=128, rows=16, cols=64, elem_log2=0, dram=0, stride=64, deps=Deps(pop_prev=True)),
        Halt()), dram_bytes=8192)
    lines = listing(program).splitlines()
    assert lines[0] == "# cds1 program: 6 instructions, DRAM image 8192 bytes"
    assert lines[1] == ("0: LOAD space=sp row=0 rows=16 cols=64 elem_log2=0 dram=4096 stride=64 transpose=1 "
                        "[push_next]")
    assert lines[3] == "2: CONFIG reg=shiftmax_x0 value=-42"
    assert lines[6] == "5: HALT"
    check_tokens(program)


@pytest.mark.parametrize(("instr", "message"), [
    (Gemm(dataflow=0, accumulate=0, a_row=0, b_row=0, c_row=0, m=0, n=4, k=4),
     "instruction 3: GEMM: field 'm' must be an integer in [1, 4096], got 0"),
    (Load(space=Space.SP, row=0, rows=1, cols=1, elem_log2=0, dram=2**32, stride=0),
     "instruction 3: LOAD: field 'dram' must be an integer in [0, 4294967295], got 4294967296"),
    (Store(space=Space.CONST, row=0, rows=1, cols=1, elem_log2=0, dram=0, stride=0),
     "instruction 3: STORE: field 'space' must be an integer in [0, 1], got <Space.CONST: 2>"),
    (Load(space=Space.SP, row=0, rows=1, cols=1, elem_log2=0, dram=0, stride=0, deps=Deps(pop_prev=True)),
     "instruction 3: LOAD: the load queue has no previous queue (pop_prev/push_prev must be 0)"),
    (Config(reg=ConfigReg.TOPK_K, value=2**63), "instruction 3: CONFIG: field 'value' must be an integer in "
     "[-9223372036854775808, 9223372036854775807], got 9223372036854775808"),
])
def test_bad_fields_are_named(instr, message: str) -> None:
    with pytest.raises(InputError) as err:
        encode(instr, 3)
    assert str(err.value) == message


def test_bad_files_and_listings_are_one_line() -> None:
    good = to_bytes(Program((Halt(),), 0))
    with pytest.raises(InputError, match=r"^prog.bin: not a cds1 program"):
        from_bytes(b"XXXX" + good[4:], "prog.bin")
    with pytest.raises(InputError, match=r"^prog.bin: the header says 1 instructions \(32 bytes\) but the file has "
                                         r"48 bytes$"):
        from_bytes(good + bytes(16), "prog.bin")
    with pytest.raises(InputError, match=r"^prog.bin: instruction 0: unknown opcode 15$"):
        from_bytes(good[:16] + b"\x0f" + bytes(15), "prog.bin")
    with pytest.raises(InputError, match=r"^p.lst:2: GEMM has no field 'q'$"):
        parse_listing("# x\nGEMM q=1\nHALT\n", "p.lst")
    with pytest.raises(InputError, match=r"^p.lst:1: VEC field 'fn': unknown value 'softmax' \(known: requant, "):
        parse_listing("VEC fn=softmax\nHALT\n", "p.lst")
    with pytest.raises(InputError, match=r"^p.lst: the last instruction must be HALT$"):
        parse_listing("CONFIG reg=topk_k value=2\n", "p.lst")


def _load(**deps):
    return Load(space=Space.SP, row=0, rows=1, cols=1, elem_log2=0, dram=0, stride=1, deps=Deps(**deps))


def _gemm(**deps):
    return Gemm(dataflow=0, accumulate=0, a_row=0, b_row=1, c_row=0, m=1, n=1, k=1, deps=Deps(**deps))


def _store(**deps):
    return Store(space=Space.ACC, row=0, rows=1, cols=1, elem_log2=2, dram=0, stride=4, deps=Deps(**deps))


def test_token_check_accepts_a_double_buffered_pipeline() -> None:
    """Two buffer halves: loads run up to two ahead of compute (seeded WAR tokens), stores behind it."""
    body = []
    for _ in range(5):
        body += [_load(pop_next=True, push_next=True), _gemm(pop_prev=True, push_prev=True, push_next=True),
                 _store(pop_prev=True)]
    check_tokens(Program((*body, Halt()), 0), seed={(Queue.EXECUTE, Queue.LOAD): 2})


def test_token_check_names_the_instruction_that_deadlocks() -> None:
    body = (_load(pop_next=True, push_next=True), _gemm(pop_prev=True, push_next=True), _store(pop_prev=True),
            _load(pop_next=True, push_next=True), Halt())
    with pytest.raises(InputError, match=r"^program: instruction 3 \(LOAD\) waits for a dependency token that is "
                                         r"never pushed: the queues deadlock$"):
        check_tokens(Program(body, 0), seed={(Queue.EXECUTE, Queue.LOAD): 1})
    with pytest.raises(InputError, match=r"^program: tokens left unpopped at HALT \(\{'load->execute': 1\}\)"):
        check_tokens(Program((_load(push_next=True), Halt()), 0))


def test_every_field_is_in_the_listing() -> None:
    for cls in (Load, Store, Gemm, Vec, Config, Nop):
        assert set(field_names(cls)) == {name for name, _, _ in cls.LAYOUT}


def test_a_trace_mark_runs_on_the_execute_queue_only() -> None:
    mark = Nop(queue=Queue.EXECUTE, trace=1, mark=517)
    assert decode(encode(mark)) == mark
    assert int.from_bytes(encode(mark), "little") >> 16 & 0xFFFF == 517
    program = Program((mark, Halt()), 0)
    assert parse_listing(listing(program)) == program
    with pytest.raises(InputError, match=r"^NOP: a trace mark runs on the execute queue only, not on store$"):
        encode(Nop(queue=Queue.STORE, trace=1))
