"""Find the accelerator model a pass should use: the compile's, or one named by the pass's ``target`` option."""

from __future__ import annotations

from xdsl.context import Context

from hw.errors import InputError

__all__ = ["resolve_model"]


def resolve_model(ctx: Context, pass_name: str, target: str | None):
    """The AcceleratorModel for ``pass_name``: from ``target=`` when given, else from the compile context."""
    from hw.models import build_model
    from hw.targets import load_target

    env = getattr(ctx, "env", None)
    if target is not None:
        model = build_model(load_target(target))
        if env is not None:
            env.target, env.model = model.target, model
        return model
    if env is None or env.model is None:
        raise InputError(f"pass '{pass_name}' needs a target: give it as {pass_name}{{target=fpga-u280}}")
    return env.model
