"""``save_model``/``load_model``: a model of built-in layers, architecture and weights, in
one checksummed safetensors file (the architecture as JSON in its metadata)."""

from __future__ import annotations

from ..io import load, save
from .architecture import architecture, build


def save_model(model, path):
    """Write ``model`` (built-in layers only) to ``path``, atomically.

    >>> tape.nn.save_model(model, "model.safetensors")
    >>> same = tape.nn.load_model("model.safetensors")
    """
    save(model.state_dict(), path, metadata={"architecture": architecture(model)})


def load_model(path, device=None):
    """The model saved by ``save_model``, rebuilt and loaded; nothing is unpickled."""
    tensors, metadata = load(path, with_metadata=True)
    spec = (metadata or {}).get("architecture")
    if spec is None:
        raise ValueError(
            f"{path} holds tensors but no architecture: it was written by tape.save, not "
            "tape.nn.save_model. Build the model in code and use "
            "model.load_state_dict(tape.load(path))."
        )
    model = build(spec)
    model.load_state_dict(tensors, strict=True)
    return model.to(device) if device is not None else model
