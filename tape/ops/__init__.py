"""The differentiable ops, one module per family; each forward sits beside its VJP rules."""
