"""Read an ``.mlir`` file for ``codesign opt`` and refuse, in linear time, the text xDSL cannot survive.

xDSL's parser is recursive (about eight Python frames per nested bracket: some 120 nested ``[{`` exhaust Python's
default recursion limit of 1000), and its string-literal regex (``MLIRLexer._unescaped_characters_regex``) repeats a
repeated group, so an unterminated string backtracks exponentially (a quote and 30 letters take ~25 s, each letter
doubles it). :func:`check_mlir_text` scans the text once with the same string grammar written with possessive
quantifiers (Python 3.11+), which cannot backtrack, and counts bracket nesting; refused text never reaches xDSL.
It also refuses integer types wider than MLIR's limit (``IntegerType::kMaxWidth``, 2^24 - 1 bits): xDSL takes any
width and computes the type's range as ``1 << width``, which an ``i`` followed by 22 digits turns into an
OverflowError.
"""

from __future__ import annotations

import re
from pathlib import Path

from hw.errors import InputError

__all__ = ["MAX_INT_WIDTH", "MAX_MLIR_BYTES", "MAX_NESTING", "check_mlir_text", "read_mlir"]

MAX_MLIR_BYTES = 64 * 2**20
"""Largest ``.mlir`` file ``codesign opt`` reads (bytes); dataflow IR keeps weights out of the text, so real modules
are kilobytes."""

MAX_NESTING = 64
"""Deepest bracket nesting (``( [ { <`` together) accepted: half of what xDSL parses and prints under Python's default
recursion limit (about 120 nested ``[{``), leaving room for the caller's frames; real dataflow IR nests about 6 deep."""

MAX_INT_WIDTH = 2**24 - 1
"""Widest integer type accepted (bits): MLIR's own ``IntegerType::kMaxWidth`` (mlir/IR/BuiltinTypes.h)."""

# One token per match, tried in order: a comment, a well-formed string (the lexer's grammar: no raw newline, escapes
# \" \n \t \\ or two hex digits; possessive so a failed match costs one scan), a quote that starts no well-formed
# string, the arrow (whose '>' closes nothing), an opening and a closing bracket, an integer type's width.
_TOKENS = re.compile(
    r'//[^\n]*'
    r'|"(?:[^"\\\n\v\f]++|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*+"'
    r'|(?P<bad>")'
    r'|->'
    r'|(?P<open>[(\[{<])'
    r'|(?P<close>[)\]}>])'
    # an integer type, alone or a shaped type's element (2x?xi8), not inside a name (%i8, @fi16, !my.i32)
    r'|(?:(?<=[0-9?]x)|(?<![\w%@#$.^!-]))[su]?i(?P<width>[0-9]+)\b'
)


def check_mlir_text(text: str, display: str) -> None:
    """Raise ``InputError`` naming ``display:line`` for a malformed string literal or nesting over
    :data:`MAX_NESTING`; linear in ``len(text)``."""
    depth = 0
    for match in _TOKENS.finditer(text):
        if match.group("open"):
            depth += 1
            if depth > MAX_NESTING:
                raise InputError(f"{display}:{_line(text, match.start())}: brackets nested more than {MAX_NESTING} "
                                 "deep; codesign opt reads IR nested at most that deep")
        elif match.group("close"):
            depth = max(depth - 1, 0)  # a stray '>' (as in '>=') must not hide real nesting
        elif match.group("width") is not None:
            width = match.group("width")
            if len(width) > 9 or int(width) > MAX_INT_WIDTH:  # the length first: no huge int is ever built
                raise InputError(f"{display}:{_line(text, match.start())}: integer type {match.group(0)[:24]} is wider "
                                 f"than MLIR's {MAX_INT_WIDTH} bits")
        elif match.group("bad") is not None:
            raise InputError(f"{display}:{_line(text, match.start())}: string literal not closed on its line (or an "
                             "escape other than \\\" \\n \\t \\\\ or two hex digits)")


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def read_mlir(path: str | Path) -> str:
    """The text of an ``.mlir`` file, checked by :func:`check_mlir_text`; ``InputError`` for a missing file, a folder,
    a file over :data:`MAX_MLIR_BYTES` or one that is not UTF-8."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not an .mlir file")
    size = p.stat().st_size
    if size > MAX_MLIR_BYTES:
        raise InputError(f"{path}: {size} bytes is larger than the {MAX_MLIR_BYTES} bytes codesign opt reads")
    with p.open("rb") as fh:  # read at most the limit: the file may grow, or be a device
        data = fh.read(MAX_MLIR_BYTES + 1)
    if len(data) > MAX_MLIR_BYTES:
        raise InputError(f"{path}: larger than the {MAX_MLIR_BYTES} bytes codesign opt reads")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r})") from None
    check_mlir_text(text, str(path))
    return text
