"""``save_model``/``load_model``: a model of built-in layers, architecture and weights, in
one checksummed safetensors file (the architecture as JSON in its metadata)."""

from __future__ import annotations

import os

from ..io import load, save
from .architecture import architecture, build
from .init import shapes_only


def save_model(model, path):
    """Write ``model`` (built-in layers only) to ``path``, atomically.

    >>> tape.nn.save_model(model, "model.safetensors")
    >>> same = tape.nn.load_model("model.safetensors")
    """
    save(model.state_dict(), path, metadata={"architecture": architecture(model)})


def load_model(path, device=None):
    """The model saved by ``save_model``, rebuilt and loaded; nothing is unpickled.

    The architecture is first built with placeholders (no memory, no initialisation)
    and checked against the stored tensors' names and shapes; the layers then take the
    loaded arrays, so a file cannot make us allocate more than it holds.
    """
    tensors, metadata = load(path, with_metadata=True)
    spec = metadata.get("architecture") if isinstance(metadata, dict) else None
    if spec is None or not isinstance(tensors, dict):
        raise ValueError(
            f"{os.fspath(path)!r} holds no architecture: it was not written by "
            "tape.nn.save_model. Build the model in code and use "
            "model.load_state_dict(tape.load(path))."
        )
    try:
        with shapes_only():
            model = build(spec)
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
        raise ValueError(f"tape.nn.load_model: {os.fspath(path)!r} describes an architecture "
                         f"that cannot be built ({type(e).__name__}: {e})") from None
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"tape.nn.load_model: the tensors in {os.fspath(path)!r} do not fit "
                         f"the architecture it describes: {e}") from None
    return model.to(device) if device is not None else model
