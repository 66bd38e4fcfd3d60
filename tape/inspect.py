"""Seeing the tape: a summary table, memory per op, and Graphviz pictures.

A tape is plain data, a list of entries ``(op, inputs, ans, out, params, where)`` (see
``ops/core.py``), so it can be printed and drawn without any framework machinery.

Bytes: an entry keeps alive the arrays its rules read (kept inputs, constants such as
the 0-d array of ``x * 2.0``, a kept output, arrays among its params); tensors it does
not need are only nodes (shape and dtype). A view keeps its whole base array alive, so
a view counts as its base. An array held by several entries (one entry's output is the
next one's input) counts once, at the first entry that holds it: the bytes column adds
up to the total, and ``memory()`` adds the same numbers per op.
"""

from __future__ import annotations

import linecache
import os
import shutil
import subprocess

from .node import Node, key_of
from .ops.record import INPUTS, OP, OUT
from .tensor import Tensor


# ----- bytes -----
def _root(a):
    """The array whose buffer ``a`` shares (a view keeps its whole base alive)."""
    while hasattr(getattr(a, "base", None), "nbytes"):
        a = a.base
    return a


def _held(entry):
    """The arrays an entry keeps alive, each once, by the id of its root buffer."""
    _, inputs, ans, _, params, _ = entry
    found = {}
    items = list(inputs) + [ans]
    for p in params.values():
        items.extend(p if isinstance(p, (list, tuple)) else (p,))
    for a in items:
        data = a.data if isinstance(a, Tensor) else a
        if hasattr(data, "nbytes") and hasattr(data, "dtype"):
            root = _root(data)
            found[id(root)] = root
    return found


def _new_bytes(tape):
    """Bytes each entry holds that no earlier entry held, in entry order."""
    seen, out = set(), []
    for entry in tape._entries:
        held = _held(entry)
        out.append(sum(int(a.nbytes) for k, a in held.items() if k not in seen))
        seen.update(held)
    return out


def memory(tape) -> dict:
    """``{"total": bytes, op name: bytes, ...}``; an array shared by entries counts once."""
    per_op = {}
    for entry, n in zip(tape._entries, _new_bytes(tape)):
        per_op[entry[OP].name] = per_op.get(entry[OP].name, 0) + n
    return {"total": sum(per_op.values()), **per_op}


def _human(n):
    """'1,204 bytes (1.2 KB)': exact, then readable."""
    size, unit = float(n), "bytes"
    for bigger in ("KB", "MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n:,} bytes" + (f" ({size:,.1f} {unit})" if unit != "bytes" else "")


# ----- the table -----
def _sig(x):
    if isinstance(x, (Tensor, Node)):
        return f"{tuple(x.shape)} {x.dtype}"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"const {tuple(x.shape)} {x.dtype}"
    text = repr(x)
    return text if len(text) <= 12 else text[:11] + "…"


def _line(where):
    """'file:line: code', the file relative to the working directory when inside it."""
    path, lineno = where
    try:
        rel = os.path.relpath(path)
        path = path if rel.startswith("..") else rel
    except ValueError:  # another drive
        pass
    code = linecache.getline(where[0], lineno).strip()
    return f"{path}:{lineno}" + (f": {code}" if code else "")


def summary(tape) -> str:
    """The entries as a table (index, op, inputs, output, bytes, source line), then totals.

    Source lines need ``Tape(source_lines=True)``; bytes are explained in the module
    docstring (each array counted once, so the column adds up to the total).
    """
    entries = tape._entries
    rows = [("#", "op", "inputs", "output", "bytes", "line")]
    for k, (entry, n) in enumerate(zip(entries, _new_bytes(tape))):
        op, inputs, _, out, _, where = entry
        line = _line(where) if where else "-"
        ins = ", ".join(_sig(a) for a in inputs) or "-"
        rows.append((str(k), op.name, ins, _sig(out), f"{n:,}", line))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(r[i].rjust(widths[i]) if i in (0, 4) else r[i].ljust(widths[i])
                  for i in range(5)) + "  " + r[5]
        for r in rows
    ]
    mem = memory(tape)
    total = mem.pop("total")
    lines.append(f"{len(entries)} entries, {_human(total)} kept alive for the gradient "
                 f"(each array counted once), {len(tape._variables)} watched variable"
                 + ("" if len(tape._variables) == 1 else "s"))
    if mem:
        lines.append("by op: " + ", ".join(f"{k} {v:,}" for k, v in
                                            sorted(mem.items(), key=lambda kv: -kv[1])))
    if tape._spent:
        lines.append("(this tape is not persistent: gradient() released its entries)")
    elif entries and not any(e[-1] for e in entries):
        lines.append("(create the tape with tape.Tape(source_lines=True) to see source lines)")
    return "\n".join(lines)


# ----- Graphviz -----
_COLLAPSE_OVER = 200  # tapes longer than this collapse runs of a repeated block
_MAX_PERIOD = 64  # the longest block looked for
_MIN_REPEATS = 3
_VARIABLE, _TARGET, _CONSTANT = "#c8f0c8", "#ffd8a8", "#eeeeee"


def _blocks(names):
    """Split a sequence of op names into runs ``(start, period, repeats)``: a block of
    ``period`` entries repeated ``repeats`` times (``period == repeats == 1``: one entry)."""
    out, i, n = [], 0, len(names)
    while i < n:
        best = (1, 1)
        for p in range(1, min(_MAX_PERIOD, (n - i) // _MIN_REPEATS) + 1):
            if names[i + p] != names[i] or names[i + 2 * p] != names[i]:
                continue  # cheap rejection before comparing whole blocks
            block, reps = names[i: i + p], 1
            while names[i + reps * p: i + (reps + 1) * p] == block:
                reps += 1
            if reps >= _MIN_REPEATS and reps * p > best[0] * best[1]:
                best = (p, reps)
        out.append((i, best[0], best[1]))
        i += best[0] * best[1]
    return out


def _q(text):
    """A quoted DOT string; newlines become DOT's centred line breaks."""
    text = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + text + '"'


def _names(namespace):
    """``{node: name}`` for the tensors of a namespace such as ``locals()``; the first
    name wins, except that names starting with an underscore give way to others."""
    out = {}
    for k, v in (namespace or {}).items():
        n = v._node if isinstance(v, Tensor) else None
        if n is not None and (n not in out or out[n].startswith("_")):
            out[n] = str(k)
    return out


def to_dot(tape, target=None, names=None) -> str:
    """Graphviz DOT text of the tape.

    Tensors are boxes (name, shape, dtype): watched variables green, the target(s)
    orange, constants grey; ops are ellipses (with the source line when the tape keeps
    them). Nodes are numbered in order of appearance, so the text is deterministic.
    Tapes longer than 200 entries collapse runs of 3 or more repeated blocks into one
    dashed ellipse.
    """
    entries = tape._entries
    names = _names(names)
    targets = {t._node for t in (target if isinstance(target, (list, tuple)) else [target])
               if t is not None}
    produced = {e[OUT] for e in entries}
    lines = ["digraph tape {", "  rankdir=TB;",
             '  node [shape=ellipse, fontname="Helvetica", fontsize=10, margin="0.1,0.03"];',
             "  edge [arrowsize=0.6];"]
    boxes, inside = {}, {}  # node -> box name; node of a tensor made inside a block -> block

    def tensor_box(n):
        box = boxes.get(n)
        if box is None:
            box = boxes[n] = f"t{len(boxes)}"
            name = names.get(n)
            label = (f"{name}\n" if name else "") + f"{tuple(n.shape)} {n.dtype}"
            style = ""
            if n in targets:
                style = f', style="filled,bold", fillcolor="{_TARGET}"'
            elif n in tape._variables:
                style = f', style=filled, fillcolor="{_VARIABLE}"'
            elif n not in produced:
                style = f', style=filled, fillcolor="{_CONSTANT}", color="#999999"'
            lines.append(f"  {box} [shape=box, label={_q(label)}{style}];")
        return box

    def edges_in(op_node, inputs, skip=()):
        for n in dict.fromkeys(key_of(a) for a in inputs if isinstance(a, (Tensor, Node))):
            if n in skip:
                continue
            if n in inside:
                lines.append(f"  {inside[n]} -> {op_node} [style=dashed];")
            else:
                lines.append(f"  {tensor_box(n)} -> {op_node};")

    runs = (_blocks([e[OP].name for e in entries]) if len(entries) > _COLLAPSE_OVER
            else [(k, 1, 1) for k in range(len(entries))])
    for start, period, reps in runs:
        op_node, stop = f"op{start}", start + period * reps
        if reps == 1:
            op, inputs, _, _, _, where = entries[start]
            where = f"\n{os.path.basename(where[0])}:{where[1]}" if where else ""
            lines.append(f"  {op_node} [label={_q(op.name + where)}];")
            edges_in(op_node, inputs)
        else:
            ops = ", ".join(e[OP].name for e in entries[start: start + period])
            label = f"[{ops}] x {reps}\nentries {start}-{stop - 1}"
            lines.append(f"  {op_node} [style=dashed, label={_q(label)}];")
            made = {e[OUT] for e in entries[start:stop]}
            edges_in(op_node, [a for e in entries[start:stop] for a in e[INPUTS]], skip=made)
            inside.update((n, op_node) for n in made)
        last = entries[stop - 1][OUT]
        inside.pop(last, None)
        lines.append(f"  {op_node} -> {tensor_box(last)};")
    lines.append("}")
    return "\n".join(lines)


_INSTALL = (
    "draw needs Graphviz's 'dot' program, which is not on PATH. Install Graphviz: "
    "apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS), "
    "conda install graphviz, or see https://graphviz.org/download/. "
    "Without it, t.to_dot() still gives the DOT text (paste it into any Graphviz viewer)."
)


def draw(tape, path, target=None, names=None):
    """Render the tape to ``path`` (.png, .svg or .pdf) with Graphviz's ``dot`` program
    (DOT text on its stdin); returns ``path``."""
    fmt = os.path.splitext(str(path))[1][1:].lower()
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"draw: path must end in .png, .svg or .pdf, got {str(path)!r}")
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(_INSTALL)
    text = to_dot(tape, target, names)
    done = subprocess.run([dot, f"-T{fmt}"], input=text.encode(), capture_output=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"draw: dot -T{fmt} failed ({done.returncode}): "
                           f"{done.stderr.decode(errors='replace').strip()}")
    with open(path, "wb") as f:
        f.write(done.stdout)
    return path
