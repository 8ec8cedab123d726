"""The compile context: an xDSL ``Context`` that also carries what passes need beyond the IR.

Weights, the target and its model never go into the IR (a 12-layer ViT-Base would carry 340 MB), so passes that need
them (tile, schedule, quantize) read them from ``ctx.env``. Run from ``codesign opt``, a pass that needs a target
gets one from its own ``target=`` option; one that needs weights says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.arith import Arith
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func

from compiler.dialect import Dataflow
from compiler.schedule.plan import LayerPlan
from hw.errors import InputError
from hw.models.base import AcceleratorModel
from hw.perf.scheduler import Schedule
from hw.targets.schema import Target

__all__ = ["CompileEnv", "CompileContext", "make_context", "env_of"]


@dataclass
class CompileEnv:
    """State shared by the passes of one compile."""

    weights: dict[str, np.ndarray] = field(default_factory=dict)  # weight name -> array (never in the IR)
    target: Target | None = None  # the validated target; None until the pipeline resolves it
    model: AcceleratorModel | None = None  # its cost model (hw.models.build_model)
    options: dict[str, Any] = field(default_factory=dict)  # the compile choices, by name
    plans: list[LayerPlan] = field(default_factory=list)  # priced layers, written by the schedule pass
    schedule: Schedule | None = None  # the scheduler's result, written by the schedule pass
    artifacts: dict[str, Any] = field(default_factory=dict)  # report sections and simulator outputs by feature


@dataclass
class CompileContext(Context):
    """An xDSL context with the dataflow dialect loaded and a ``CompileEnv``."""

    env: CompileEnv = field(default_factory=CompileEnv)


def make_context(env: CompileEnv | None = None) -> CompileContext:
    """A context that knows builtin, func, arith and dataflow."""
    ctx = CompileContext(env=env or CompileEnv())
    for dialect in (Builtin, Func, Arith, Dataflow):
        ctx.load_dialect(dialect)
    return ctx


def env_of(ctx: Context, pass_name: str, need: str) -> CompileEnv:
    """The context's env, or an InputError saying the pass needs a compile session for ``need``."""
    env = getattr(ctx, "env", None)
    if env is None:
        raise InputError(f"pass '{pass_name}' needs {need}; run it from `codesign compile`")
    return env
