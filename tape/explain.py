"""Why does a source get no gradient? Plain-language answers from the tape's entries."""

from __future__ import annotations


def why_unconnected(tape, source) -> str:
    """The message for ``unconnected_gradients='raise'``."""
    desc = f"the source of shape {source.shape} and dtype {source.dtype}"
    if id(source) not in tape._watched:
        return (
            f"{desc} was never watched by this tape, so it has no gradient. Create it with "
            "requires_grad=True or call t.watch(x) inside the tape's with-block before using it."
        )
    return (
        f"{desc} is watched, but the target is not connected to it: no recorded op leads from "
        "it to the target (the path may go through a non-differentiable op such as a "
        "comparison, argmax or integer cast, through numpy outside the tape, or through "
        "code under no_grad()/stop_recording())."
    )
