"""docs/SOURCES.md: the repository cites only itself, and every ``docs/SOURCES.md [n]`` names an existing entry."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "docs" / "SOURCES.md"
# Spelled in pieces so that this file does not match itself.
FORBIDDEN = ("REFERENCE" + ".md", ".." + "/shared", "/work" + "/shared")
CITATION = re.compile(r"docs/SOURCES\.md\s+\[([0-9,\s]+)\]")
ENTRY = re.compile(r"^(\d+)\. ", re.MULTILINE)
# Outside git (an unpacked sdist), the folders that hold our text.
SCANNED = ("codesign", "compiler", "hw", "tests", "docs", "benchmarks", "examples")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".json", ".txt", ".mlir", ".cfg", ".ini", ""}


def _tracked_files() -> list[Path]:
    """The files git tracks, or without git every text-like file of the source folders and the top level."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(ROOT)) for top in SCANNED for p in (ROOT / top).rglob("*")
                 if p.is_file() and "models" not in p.parts]
        names += [p.name for p in ROOT.iterdir() if p.is_file()]
    return [ROOT / n for n in names if (ROOT / n).suffix in TEXT_SUFFIXES and (ROOT / n).is_file()]


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # binary data (npz, onnx): cites nothing
        return ""


def _entries() -> set[int]:
    return {int(n) for n in ENTRY.findall(SOURCES.read_text(encoding="utf-8"))}


def test_entries_are_numbered_one_to_n() -> None:
    numbers = [int(n) for n in ENTRY.findall(SOURCES.read_text(encoding="utf-8"))]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


@pytest.mark.parametrize("needle", FORBIDDEN)
def test_no_file_cites_outside_the_repository(needle: str) -> None:
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _tracked_files()
            for i, line in enumerate(_text(p).splitlines(), 1) if needle in line]
    assert not hits, f"{needle!r} cited in {hits}"


def test_every_citation_names_an_entry() -> None:
    entries = _entries()
    citations = 0
    dangling = []
    for path in _tracked_files():
        for match in CITATION.finditer(_text(path)):
            for number in re.split(r"[,\s]+", match.group(1).strip()):
                citations += 1
                if int(number) not in entries:
                    dangling.append(f"{path.relative_to(ROOT)}: [{number}]")
    assert citations > 0  # the regex still finds the citations the target YAMLs make
    assert not dangling, f"no such entry in docs/SOURCES.md: {dangling}"


def test_every_bundled_target_cites_its_sources() -> None:
    targets = sorted((ROOT / "hw" / "targets").glob("*.yaml"))
    assert targets
    uncited = [p.name for p in targets if not CITATION.search(p.read_text(encoding="utf-8"))]
    assert not uncited, uncited


def test_citation_pattern_catches_a_dangling_number() -> None:
    text = "see docs/SOURCES" + ".md [1,\n 999]"  # in pieces, or the scan above would find it
    numbers = [int(n) for m in CITATION.finditer(text) for n in re.split(r"[,\s]+", m.group(1).strip())]
    assert numbers == [1, 999] and 999 not in _entries()
