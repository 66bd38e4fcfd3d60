"""Seeing the tape: a summary table, memory per op, and Graphviz pictures.

A tape is plain data, a list of entries ``(op, inputs, arrays, output, params, where)``,
so it can be printed and drawn without any framework machinery.
"""

from __future__ import annotations

import shutil

from .tape import format_line
from .tensor import Tensor


def _arrays_of(entry):
    """The distinct arrays an entry keeps alive for its gradient: inputs, output, params."""
    _, inputs, _, out, params, _ = entry
    found = {}
    for a in list(inputs) + [out] + list(params.values()):
        data = a.data if isinstance(a, Tensor) else a
        if hasattr(data, "nbytes") and hasattr(data, "dtype"):
            found[id(data)] = data
    return found


def _bytes(arrays):
    return sum(int(a.nbytes) for a in arrays.values())


def memory(tape) -> dict:
    """``{"total": bytes, op name: bytes, ...}``; an array shared by entries counts once."""
    seen, per_op = {}, {}
    for entry in tape._entries:
        fresh = {k: v for k, v in _arrays_of(entry).items() if k not in seen}
        seen.update(fresh)
        per_op[entry[0].name] = per_op.get(entry[0].name, 0) + _bytes(fresh)
    return {"total": _bytes(seen), **per_op}


def _sig(x):
    if isinstance(x, Tensor):
        return f"{tuple(x.shape)} {x.dtype}"
    return type(x).__name__


def summary(tape) -> str:
    """The entries as a table, with totals. Source lines need ``Tape(source_lines=True)``."""
    rows = [("#", "op", "inputs", "output", "bytes", "line")]
    for k, entry in enumerate(tape._entries):
        op, inputs, _, out, _, where = entry
        ins = ", ".join(_sig(a) for a in inputs if isinstance(a, Tensor)) or "-"
        line = format_line(where, with_code=True) if where else "-"
        rows.append((str(k), op.name, ins, _sig(out), f"{_bytes(_arrays_of(entry)):,}", line))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5] for r in rows]
    mem = memory(tape)
    lines.append(f"{len(tape._entries)} entries, {mem['total']:,} bytes kept alive "
                 f"(each array counted once), {len(tape._variables)} watched variables")
    if tape._entries and not any(e[5] for e in tape._entries):
        lines.append("(create the tape with tape.Tape(source_lines=True) to see source lines)")
    return "\n".join(lines)


# ----- Graphviz -----
_MAX_PERIOD = 64


def _blocks(names):
    """Split the op-name sequence into single entries and runs of a repeated block:
    a list of (start, period, repeats)."""
    out, i, n = [], 0, len(names)
    while i < n:
        best = (1, 1)
        for p in range(1, min(_MAX_PERIOD, (n - i) // 3) + 1):
            reps = 1
            while i + (reps + 1) * p <= n and names[i + reps * p: i + (reps + 1) * p] == names[i: i + p]:
                reps += 1
            if reps >= 3 and reps * p > best[0] * best[1]:
                best = (p, reps)
        out.append((i, best[0], best[1]))
        i += best[0] * best[1]
    return out


def _label(x, names):
    name = names.get(id(x))
    head = f"{name}\\n" if name else ""
    return f"{head}{tuple(x.shape)}\\n{x.dtype}"


def to_dot(tape, target=None, names=None) -> str:
    """Graphviz DOT text: tensors as boxes (shape, dtype), ops as ellipses, watched
    variables in green, the target in orange. Repeated blocks of 3+ are collapsed."""
    names = {id(v): k for k, v in (names or {}).items() if isinstance(v, Tensor)}
    entries = tape._entries
    targets = {id(t) for t in (target if isinstance(target, (list, tuple)) else [target])
               if t is not None}
    lines = ["digraph tape {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    drawn = set()

    def tensor_node(x):
        key = f"t{id(x)}"
        if id(x) not in drawn:
            drawn.add(id(x))
            style = ""
            if id(x) in tape._variables:
                style = ', style=filled, fillcolor="#c8f0c8"'
            if id(x) in targets:
                style = ', style=filled, fillcolor="#ffd8a8"'
            lines.append(f'  {key} [shape=box, label="{_label(x, names)}"{style}];')
        return key

    for start, period, reps in _blocks([e[0].name for e in entries]):
        first, last = entries[start], entries[start + period * reps - 1]
        if reps == 1:
            op, inputs, _, out, _, _ = first
            node = f"op{start}"
            lines.append(f'  {node} [shape=ellipse, label="{op.name}"];')
        else:
            ops = ", ".join(e[0].name for e in entries[start: start + period])
            node = f"op{start}"
            lines.append(f'  {node} [shape=ellipse, style=dashed, '
                         f'label="[{ops}] x {reps}\\n({period * reps} entries)"];')
        inside = {id(e[3]) for e in entries[start: start + period * reps]}
        for a in {id(a): a for e in entries[start: start + period * reps] for a in e[1]
                  if isinstance(a, Tensor) and id(a) not in inside}.values():
            lines.append(f"  {tensor_node(a)} -> {node};")
        lines.append(f"  {node} -> {tensor_node(last[3])};")
    lines.append("}")
    return "\n".join(lines)


def draw(tape, path, target=None, names=None):
    """Render the tape to ``path`` (.png or .svg) with Graphviz's ``dot`` program."""
    dot = to_dot(tape, target, names)
    fmt = str(path).rsplit(".", 1)[-1].lower()
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"draw: path must end in .png, .svg or .pdf, got {path!r}")
    try:
        import graphviz
    except ImportError:
        graphviz = None
    if graphviz is None or shutil.which("dot") is None:
        raise RuntimeError(
            "draw needs Graphviz: pip install graphviz, and the dot program "
            "(apt-get install graphviz, brew install graphviz, or conda install graphviz). "
            "t.to_dot() gives the DOT text without them."
        )
    source = graphviz.Source(dot)
    data = source.pipe(format=fmt)
    with open(path, "wb") as f:
        f.write(data)
    return path
