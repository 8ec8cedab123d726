"""``cds1`` programs: the binary file, the readable listing (and its parser), and a dependency-token check.

A program is a list of instructions ending in ``HALT``. :func:`to_bytes` / :func:`from_bytes` write and read
``program.bin`` (docs/ISA.md, Program file); :func:`listing` / :func:`parse_listing` write and read
``program.lst`` so a listing can be edited and re-assembled. :func:`check_tokens` runs the three queues' token
protocol abstractly (no data, no timing) and names the first instruction that could never start: a program that
passes it cannot deadlock on tokens, and never pops a token nobody pushed.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from hw.errors import InputError
from hw.isa.instructions import (
    CLASSES,
    WORD_BYTES,
    Deps,
    Halt,
    Instruction,
    Queue,
    decode,
    encode,
    field_names,
    queue_of,
)

__all__ = ["MAGIC", "HEADER_BYTES", "Program", "to_bytes", "from_bytes", "listing", "parse_listing",
           "check_tokens"]

MAGIC = b"CDS1"
HEADER_BYTES = 16
_HEADER = struct.Struct("<4sII4x")
_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


@dataclass(frozen=True)
class Program:
    """Instructions (ending in ``HALT``) and the size in bytes of the DRAM image they address."""

    instructions: tuple[Instruction, ...]
    dram_bytes: int


def to_bytes(program: Program) -> bytes:
    """``program.bin``: the header, then each instruction's 16-byte word (validated, named by index if bad)."""
    body = b"".join(encode(instr, i) for i, instr in enumerate(program.instructions))
    if not program.instructions or not isinstance(program.instructions[-1], Halt):
        raise InputError("program: the last instruction must be HALT")
    return _HEADER.pack(MAGIC, len(program.instructions), program.dram_bytes) + body


def from_bytes(raw: bytes, source: str = "program") -> Program:
    """The program in ``raw`` (a ``program.bin``); ``InputError`` naming ``source`` and the bad instruction."""
    if len(raw) < HEADER_BYTES:
        raise InputError(f"{source}: {len(raw)} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, count, dram = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise InputError(f"{source}: not a cds1 program (magic {magic!r}, expected {MAGIC!r})")
    if len(raw) != HEADER_BYTES + count * WORD_BYTES:
        raise InputError(f"{source}: the header says {count} instructions ({HEADER_BYTES + count * WORD_BYTES} "
                         f"bytes) but the file has {len(raw)} bytes")
    body = raw[HEADER_BYTES:]
    try:
        instrs = tuple(decode(body[i * WORD_BYTES:(i + 1) * WORD_BYTES], i) for i in range(count))
    except InputError as err:
        raise InputError(f"{source}: {err}") from None
    if not instrs or not isinstance(instrs[-1], Halt):
        raise InputError(f"{source}: the last instruction must be HALT")
    return Program(instrs, dram)


def _line(index: int, instr: Instruction) -> str:
    parts = [f"{index}: {type(instr).__name__.upper()}"]
    for name in field_names(type(instr)):
        value = getattr(instr, name)
        shown = value.name.lower() if name in type(instr).ENUMS and hasattr(value, "name") else str(int(value))
        parts.append(f"{name}={shown}")
    flags = [f for f in _FLAGS if getattr(instr.deps, f)]
    if flags:
        parts.append("[" + " ".join(flags) + "]")
    return " ".join(parts)


def listing(program: Program) -> str:
    """``program.lst``: a comment line with the DRAM size, then one line per instruction (docs/ISA.md)."""
    lines = [f"# cds1 program: {len(program.instructions)} instructions, DRAM image {program.dram_bytes} bytes"]
    lines += [_line(i, instr) for i, instr in enumerate(program.instructions)]
    return "\n".join(lines) + "\n"


_LINE = re.compile(r"^\s*(?:(\d+)\s*:\s*)?([A-Z]+)((?:\s+\w+=[-\w]+)*)\s*(?:\[([a-z_ ]*)\])?\s*$")
_DRAM = re.compile(r"DRAM image (\d+) bytes")


def parse_listing(text: str, source: str = "listing") -> Program:
    """The program a :func:`listing` describes; ``InputError`` naming ``source``, the line and the field."""
    instrs: list[Instruction] = []
    dram = 0
    by_name = {cls.__name__.upper(): cls for cls in CLASSES.values()}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            found = _DRAM.search(stripped)
            dram = int(found.group(1)) if found else dram
            continue
        m = _LINE.match(line)
        if m is None or m.group(2) not in by_name:
            raise InputError(f"{source}:{lineno}: cannot parse '{stripped}'")
        cls = by_name[m.group(2)]
        values: dict[str, object] = {}
        for item in m.group(3).split():
            name, _, raw = item.partition("=")
            if name not in field_names(cls):
                raise InputError(f"{source}:{lineno}: {m.group(2)} has no field '{name}'")
            enum = cls.ENUMS.get(name)
            if enum is not None and not re.fullmatch(r"-?\d+", raw):
                try:
                    values[name] = enum[raw.upper()]
                except KeyError:
                    raise InputError(f"{source}:{lineno}: {m.group(2)} field '{name}': unknown value '{raw}' "
                                     f"(known: {', '.join(e.name.lower() for e in enum)})") from None
            else:
                values[name] = int(raw)
        flags = (m.group(4) or "").split()
        bad = sorted(set(flags) - set(_FLAGS))
        if bad:
            raise InputError(f"{source}:{lineno}: unknown dependency flag '{bad[0]}' (known: {', '.join(_FLAGS)})")
        values["deps"] = Deps(**{f: f in flags for f in _FLAGS})
        try:
            instr = cls(**values)  # type: ignore[arg-type]
        except TypeError as err:
            raise InputError(f"{source}:{lineno}: {m.group(2)}: {err}") from None
        try:
            encode(instr, len(instrs))  # type: ignore[arg-type]
        except InputError as err:
            raise InputError(f"{source}:{lineno}: {err}") from None
        instrs.append(instr)  # type: ignore[arg-type]
    if not instrs or not isinstance(instrs[-1], Halt):
        raise InputError(f"{source}: the last instruction must be HALT")
    return Program(tuple(instrs), dram)


def check_tokens(program: Program, seed: dict[tuple[Queue, Queue], int] | None = None) -> None:
    """Run the token protocol without data: ``InputError`` naming the first instruction that can never start.

    ``seed`` gives the tokens each FIFO holds at reset, keyed (from queue, to queue); the backend seeds each WAR
    FIFO (execute -> load, store -> execute) with one token per buffer half. The queues are run as far as their
    tokens allow, in any interleaving (the result does not depend on it: a queue only ever waits for pushes), and
    every token pushed must eventually be popped, so a program leaves its FIFOs as it found them.
    """
    tokens: dict[tuple[Queue, Queue], int] = {(a, b): 0 for a in Queue for b in Queue if abs(a - b) == 1}
    for key, count in (seed or {}).items():
        tokens[key] = count
    start = dict(tokens)
    queues: dict[Queue, list[tuple[int, Instruction]]] = {q: [] for q in Queue}
    for i, instr in enumerate(program.instructions):
        q = queue_of(instr)
        if q is not None:
            queues[q].append((i, instr))
    heads = {q: 0 for q in Queue}

    def needs(q: Queue, d: Deps) -> list[tuple[Queue, Queue]]:
        out = []
        if d.pop_prev:
            out.append((Queue(q - 1), q))
        if d.pop_next:
            out.append((Queue(q + 1), q))
        return out

    progress = True
    while progress:
        progress = False
        for q in Queue:
            while heads[q] < len(queues[q]):
                _, instr = queues[q][heads[q]]
                want = needs(q, instr.deps)
                if any(tokens[k] == 0 for k in want):
                    break
                for k in want:
                    tokens[k] -= 1
                if instr.deps.push_prev:
                    tokens[(q, Queue(q - 1))] += 1
                if instr.deps.push_next:
                    tokens[(q, Queue(q + 1))] += 1
                heads[q] += 1
                progress = True
    stuck = [queues[q][heads[q]] for q in Queue if heads[q] < len(queues[q])]
    if stuck:
        index, instr = min(stuck, key=lambda item: item[0])
        raise InputError(f"program: instruction {index} ({type(instr).__name__.upper()}) waits for a dependency "
                         f"token that is never pushed: the queues deadlock")
    left = {f"{a.name.lower()}->{b.name.lower()}": n - start[(a, b)] for (a, b), n in tokens.items()
            if n != start[(a, b)]}
    if left:
        raise InputError(f"program: tokens left unpopped at HALT ({left}): every push needs its pop")

