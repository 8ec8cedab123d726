"""The one exception type for problems in what a user gave us.

It lives in ``hw`` because ``hw`` is the bottom layer: ``compiler`` and ``codesign`` both import it,
and ``hw`` imports neither. The CLI prints ``str(error)`` as one line and exits with status 2;
anything else escaping is a bug in codesign, not in the input.
"""

from __future__ import annotations

__all__ = ["InputError", "first_line"]


class InputError(Exception):
    """Bad user input: a missing file, an unsupported op, a YAML key, an option value.

    The message must name the culprit (file, op type and node name, YAML key path and line) and,
    where there is one, what to do about it. Keep it to one line.
    """


def first_line(err: BaseException) -> str:
    """The first non-blank line of ``err``'s message (its type name when there is none): what a one-line
    InputError quotes from a library's multi-line exception (onnx's checker, onnxruntime, numpy's file readers)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__
