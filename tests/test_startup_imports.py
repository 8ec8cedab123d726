"""What the CLI loads: ``codesign --help`` loads neither the compiler nor ONNX, and a float compile never loads torch.

torch costs seconds of start-up (and hundreds of MB) that only the simulator, calibration and GPTQ need; these check
by ``sys.modules`` in a fresh interpreter, never by timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import model_path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import contextlib, io, json, sys
from codesign.cli import main
out = {}
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
out["help"] = sorted(m for m in ("torch", "onnx", "optuna", "amaranth", "compiler.pipeline") if m in sys.modules)
if len(sys.argv) > 1:
    with contextlib.redirect_stdout(io.StringIO()):
        out["status"] = main(["compile", sys.argv[1], "-q"])
    out["compile"] = sorted(m for m in ("torch", "onnx", "compiler.simulate") if m in sys.modules)
    import compiler.simulate  # noqa: F401  (the probe itself: the simulator does load torch)
    out["simulate"] = "torch" in sys.modules
print(json.dumps(out))
"""


def _probe(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_loads_no_compiler_onnx_or_torch():
    assert _probe()["help"] == []


def test_float_compile_does_not_load_torch():
    out = _probe(str(model_path("vit_tiny.onnx")))  # has a GELU, whose recognition evaluates an Erf
    assert out["status"] == 0
    assert out["compile"] == ["onnx"]
    assert out["simulate"] is True
