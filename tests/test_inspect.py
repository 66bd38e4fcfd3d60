"""Seeing the tape: summary and memory (bytes for known shapes), DOT text of a known
graph, drawing with Graphviz (or a clear message without it), collapsing 10,000-entry
tapes, every kind of break that ``explain`` names, and the broadcast check."""

import shutil
import sys
import time
import warnings
import weakref

import numpy as np
import pytest

import tape

HERE = "test_inspect.py"
has_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")


def f32(*shape, value=1.0, requires_grad=False):
    return tape.tensor(np.full(shape, value, np.float32), requires_grad=requires_grad)


def line_below():
    """The line number of the caller's next line."""
    return sys._getframe(1).f_lineno + 1


# ----------------------------------------------------------------- summary and memory


def small_tape(**kwargs):
    x = f32(100, requires_grad=True)  # 400 bytes, a variable: the user's, not the tape's
    with tape.Tape(persistent=True, **kwargs) as t:
        y = x.tanh()  # its rule reads only its output: keeps y, 400 bytes
        z = y * y  # reads both inputs: y again (counted once)
        s = z.sum()  # reads only shapes: keeps nothing
    return t, s


def test_memory_counts_each_array_once_per_op_kind():
    t, _ = small_tape()
    assert t.memory() == {"total": 400, "tanh": 400, "mul": 0, "sum": 0}


def test_memory_counts_constants_and_views_as_their_base():
    x = f32(100, requires_grad=True)
    with tape.Tape() as t:
        r = x.reshape(10, 10)  # a view of x, and reshape's rule reads only shapes
        s = (r * 2.0).sum()  # r's rule reads the 0-d float32 constant (4 bytes); the
    assert t.memory() == {"total": 4, "reshape": 0, "mul": 4, "sum": 0}  # constant's is
    assert s.shape == ()  # never run, so r itself is not kept


def test_a_tape_keeping_source_lines_keeps_no_more():
    t, _ = small_tape(source_lines=True)  # its outputs are noted weakly, for explain
    assert t.memory() == {"total": 400, "tanh": 400, "mul": 0, "sum": 0}


KEPT = [  # (what is recorded, which of its inputs' and output's values the entry keeps)
    ("add", lambda x, w: x + w, []),
    ("mul", lambda x, w: x * w, ["x", "w"]),
    ("mul by a constant", lambda x, w: x * 3.0, []),  # only the constant (not a tensor)
    ("exp", lambda x, w: x.exp(), ["out"]),
    ("relu", lambda x, w: x.relu(), ["out"]),
    ("sum", lambda x, w: x.sum(), []),
    ("reshape", lambda x, w: x.reshape(-1), []),
    ("matmul", lambda x, w: x @ w, ["x", "w"]),
    ("softmax", lambda x, w: x.softmax(-1), ["out"]),
    ("concatenate", lambda x, w: tape.concatenate([x, w]), []),
    ("matmul, w a constant", lambda x, w: x @ w.detach(), ["w"]),
]


@pytest.mark.parametrize("name, fn, kept", KEPT, ids=[k[0] for k in KEPT])
def test_an_entry_keeps_only_the_values_its_rules_read(name, fn, kept):
    x, w = f32(3, 3, requires_grad=True), f32(3, 3, value=2.0, requires_grad=True)
    with tape.Tape() as t:
        out = fn(x, w)
    (entry,) = t._entries
    held = {id(a.data if isinstance(a, tape.Tensor) else a) for a in entry[1] + (entry[2],)}
    arrays = {"x": x.data, "w": w.data, "out": out.data}
    assert {k for k, a in arrays.items() if id(a) in held} == set(kept)


def test_an_intermediate_the_user_drops_is_freed_and_the_gradient_still_flows():
    x = f32(1000, requires_grad=True)
    with tape.Tape() as t:
        h = x * 2.0 + 1.0  # no rule reads h's values
        alive = weakref.ref(h.data)
        y = (h * 3.0).sum()
        del h
    assert alive() is None
    np.testing.assert_array_equal(t.gradient(y, x).numpy(), np.full(1000, 6.0, np.float32))


def test_summary_table_bytes_column_adds_up_to_the_total():
    t, _ = small_tape()
    text = t.summary()
    rows = text.splitlines()
    assert rows[0].split() == ["#", "op", "inputs", "output", "bytes", "line"]
    assert [r.split()[1] for r in rows[1:4]] == ["tanh", "mul", "sum"]
    assert "(100,) float32, (100,) float32" in rows[2]  # mul's two inputs
    assert [r.split()[-2] for r in rows[1:4]] == ["400", "0", "0"]
    assert "3 entries, 400 bytes kept alive for the gradient" in text
    assert "each array counted once" in text and "1 watched variable" in text
    assert "by op: tanh 400, mul 0, sum 0" in text
    assert "source_lines=True" in text  # the hint, since lines were not kept


def test_print_shows_the_table(capsys):
    t, _ = small_tape()
    print(t)
    assert capsys.readouterr().out.strip() == t.summary()


def test_summary_shows_the_users_source_lines():
    x = f32(3, requires_grad=True)
    with tape.Tape(source_lines=True) as t:
        n = line_below()
        y = (x * x).sum()
    text = t.summary()
    assert f"{HERE}:{n}: y = (x * x).sum()" in text
    assert "source_lines=True" not in text and y.shape == ()


def test_summary_of_a_spent_tape_says_so():
    x = f32(3, requires_grad=True)
    with tape.Tape() as t:
        y = (x * x).sum()
    t.gradient(y, x)
    assert "0 entries" in t.summary() and "released its entries" in t.summary()


# ----------------------------------------------------------------- DOT and drawing

KNOWN_DOT = r"""digraph tape {
  rankdir=TB;
  node [shape=ellipse, fontname="Helvetica", fontsize=10, margin="0.1,0.03"];
  edge [arrowsize=0.6];
  op0 [label="matmul"];
  t0 [shape=box, label="x\n(2, 3) float32", style=filled, fillcolor="#eeeeee", color="#999999"];
  t0 -> op0;
  t1 [shape=box, label="w\n(3, 4) float32", style=filled, fillcolor="#c8f0c8"];
  t1 -> op0;
  t2 [shape=box, label="(2, 4) float32"];
  op0 -> t2;
  op1 [label="add"];
  t2 -> op1;
  t3 [shape=box, label="b\n(4,) float32", style=filled, fillcolor="#c8f0c8"];
  t3 -> op1;
  t4 [shape=box, label="(2, 4) float32"];
  op1 -> t4;
  op2 [label="tanh"];
  t4 -> op2;
  t5 [shape=box, label="(2, 4) float32"];
  op2 -> t5;
  op3 [label="sum"];
  t5 -> op3;
  t6 [shape=box, label="y\n() float32", style="filled,bold", fillcolor="#ffd8a8"];
  op3 -> t6;
}"""


def known_graph(**kwargs):
    x = f32(2, 3)  # a constant: grey
    w = f32(3, 4, requires_grad=True)  # watched variables: green
    b = f32(4, value=0.0, requires_grad=True)
    with tape.Tape(persistent=True, **kwargs) as t:
        y = tape.tanh(x @ w + b).sum()  # the target: orange
    return t, y, {"x": x, "w": w, "b": b, "y": y}


def test_dot_text_of_a_known_graph():
    t, y, names = known_graph()
    assert t.to_dot(y, names) == KNOWN_DOT
    assert t.to_dot(y, names) == KNOWN_DOT  # deterministic: no Python ids in it


def test_dot_without_names_or_target_and_with_source_lines():
    t, y, _ = known_graph()
    plain = t.to_dot()
    assert "#ffd8a8" not in plain and 'label="w\\n' not in plain
    assert plain.count('fillcolor="#c8f0c8"') == 2  # the watched variables still show
    t, y, names = known_graph(source_lines=True)
    assert f'op0 [label="matmul\\n{HERE}:' in t.to_dot(y, names)


def test_small_tapes_are_not_collapsed():
    y = f32(100, requires_grad=True)
    with tape.Tape() as t:
        for _ in range(10):
            y = (y * 1.01).tanh()
    dot = t.to_dot(y)
    assert dot.count(' [label="mul"]') == 10 and dot.count(' [label="tanh"]') == 10


def test_a_10000_entry_tape_collapses_and_draws_in_under_a_second(tmp_path):
    x = f32(100, requires_grad=True)
    y = x
    with tape.Tape() as t:
        for _ in range(5000):
            y = (y * 1.01).tanh()
        s = y.sum()
    assert len(t._entries) == 10001
    start = time.perf_counter()
    dot = t.to_dot(s, {"x": x, "s": s})
    if shutil.which("dot"):
        t.draw(tmp_path / "long.svg", s)
    assert time.perf_counter() - start < 1.0
    nodes = [ln for ln in dot.splitlines() if "label=" in ln]
    assert len(nodes) == 5  # x, the collapsed block, its output, sum, s
    assert 'label="[mul, tanh] x 5000\\nentries 0-9999"' in dot


def test_a_tensor_made_inside_a_collapsed_block_links_to_the_block():
    y = f32(10, requires_grad=True)
    kept = []
    with tape.Tape() as t:
        for _ in range(150):
            y = (y * 1.01).tanh()
            kept.append(y)
        z = (kept[10] + y).sum()  # entries 300 (add) and 301 (sum)
    dot = t.to_dot(z)
    assert "op0 -> op300 [style=dashed];" in dot


@has_dot
@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<svg")])
def test_draw_renders_with_graphviz(tmp_path, suffix, magic):
    t, y, names = known_graph()
    path = tmp_path / f"tape{suffix}"
    assert t.draw(path, y, names) == path
    assert magic in path.read_bytes()[:400]


def test_draw_without_graphviz_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    t, y, _ = known_graph()
    with pytest.raises(RuntimeError) as e:
        t.draw(tmp_path / "tape.png", y)
    for fragment in ("apt-get install graphviz", "brew install graphviz",
                     "conda install graphviz", "t.to_dot()"):
        assert fragment in str(e.value)
    assert not (tmp_path / "tape.png").exists()
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.pdf"):
        t.draw(tmp_path / "tape.jpg", y)


# ----------------------------------------------------------------- explain


def explained(build, source_lines=True):
    """Record ``build(w, v)`` on a persistent tape; return (explanation, gradient, line).
    ``w`` (the source) is used by a recorded op first, so it is watched."""
    w = tape.tensor(np.arange(3, dtype=np.float32), requires_grad=True)
    v = f32(3, requires_grad=True)
    with tape.Tape(persistent=True, source_lines=source_lines) as t:
        h = w * 2.0
        y = build(t, h, v)
    return t.explain(y, w), t.gradient(y, w)


BREAKS = {  # how the path from the source is cut -> what the explanation must say
    "connected": (lambda t, h, v: (h * v).sum(), ["is connected"]),
    "comparison": (lambda t, h, v: ((h > 1.0) * v).sum(),
                   ["ends at 'gt'", "comparisons and argmax", HERE,
                    "enters the target's path as a constant at entry 1 ('mul'"]),
    "argmax": (lambda t, h, v: v[h.argmax()] * 2.0, ["ends at 'argmax'", HERE]),
    "integer cast": (lambda t, h, v: (h.astype(np.int32) * v).sum(),
                     ["entry 1 ('cast' -> (3,) int32", HERE, "not differentiable"]),
    "detach": (lambda t, h, v: (h.detach() * v).sum(),
               ["entry 1 ('mul'", "outside the tape", ".detach(), .data or .numpy()"]),
    ".data": (lambda t, h, v: (h.data * v).sum(), ["takes a numpy array", "outside the tape"]),
    "numpy": (lambda t, h, v: (tape.tensor(h.numpy()) * v).sum(),
              ["holds the values of a tensor computed from the source", "outside the tape"]),
    "stop_recording": (lambda t, h, v: _paused(t.stop_recording(), h, v),
                       ["path breaks at entry 1 ('mul'", "did not record",
                        "was paused 1 time(s)"]),
    "no_grad": (lambda t, h, v: _paused(tape.no_grad(), h, v),
                ["path breaks at entry 1 ('mul'", "was paused 1 time(s)"]),
    "target under no_grad": (lambda t, h, v: _all_paused(h),
                             ["target was not recorded", "paused 1 time(s)"]),
    "not connected": (lambda t, h, v: (v * 3.0).sum(),
                      ["not connected", "used by entry 0 ('mul'", "does not lead"]),
}


def _paused(block, h, v):
    with block:
        c = h * 3.0  # computed from the source, but not recorded
    return (c * v).sum()


def _all_paused(h):
    with tape.no_grad():
        return (h * 3.0).sum()


@pytest.mark.parametrize("kind", list(BREAKS))
def test_explain_names_every_kind_of_break(kind):
    build, fragments = BREAKS[kind]
    text, grad = explained(build)
    for fragment in fragments:
        assert fragment in text, (kind, fragment, text)
    assert (grad is not None) == (kind == "connected")


def test_explain_never_watched():
    x = f32(3)  # no requires_grad, never watched
    v = f32(3, requires_grad=True)
    with tape.Tape(persistent=True) as t:
        y = (v * 2.0).sum() + (x * x).sum()
    text = t.explain(y, x)
    assert "never watched" in text and "requires_grad=True" in text and "t.watch(x)" in text
    assert t.gradient(y, x) is None

    w = f32(3, requires_grad=True)  # requires_grad, but only a comparison used it
    with tape.Tape(persistent=True) as t:
        y = ((w > 0.0) * v).sum()
    assert "no op recorded on this tape used it" in t.explain(y, w)

    with tape.Tape(watch_accessed_variables=False) as t:
        y = (w * 2.0).sum()
    assert "watch_accessed_variables=False" in t.explain(y, w)


def test_explain_after_a_non_persistent_gradient():
    w = f32(3, requires_grad=True)
    with tape.Tape() as t:
        y = (w * 2.0).sum()
    t.gradient(y, w)
    assert "persistent=True" in t.explain(y, w)


@pytest.mark.parametrize("kind", ["integer cast", "comparison", "not connected"])
def test_unconnected_raise_gives_the_same_explanation(kind):
    w = tape.tensor(np.arange(3, dtype=np.float32), requires_grad=True)
    v = f32(3, requires_grad=True)
    with tape.Tape(persistent=True, source_lines=True) as t:
        y = BREAKS[kind][0](t, w * 2.0, v)
    with pytest.raises(ValueError) as e:
        t.gradient(y, w, unconnected_gradients="raise")
    assert str(e.value) == t.explain(y, w)


# ----------------------------------------------------------------- broadcast check


def broadcast_warnings(body, times=2):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(times):
            body()
    return [str(w.message) for w in caught if "check_broadcast" in str(w.message)]


def test_check_broadcast_warns_once_per_line_for_a_size_1_axis():
    w, x = f32(3, 1, requires_grad=True), f32(3, 4)

    def step():
        with tape.Tape(check_broadcast=True) as t:
            y = (w * x).sum()
        assert t.gradient(y, w).shape == (3, 1)

    messages = broadcast_warnings(step)
    assert len(messages) == 1
    assert "'mul' broadcast a variable of shape (3, 1) to (3, 4)" in messages[0]
    assert f"{HERE}:" in messages[0] and "y = (w * x).sum()" in messages[0]


def test_check_broadcast_warns_for_a_missing_leading_axis():
    b, x = f32(4, requires_grad=True), f32(3, 4)

    def step():
        with tape.Tape(check_broadcast=True) as t:
            y = (x + b).sum()
        t.gradient(y, b)

    messages = broadcast_warnings(step)
    assert len(messages) == 1 and "shape (4,) to (3, 4)" in messages[0]


def test_check_broadcast_is_quiet_for_explicit_broadcasts_and_when_off(monkeypatch):
    monkeypatch.delenv("TAPE_CHECK_BROADCAST", raising=False)
    w, x = f32(3, 1, requires_grad=True), f32(3, 4)

    def explicit():
        with tape.Tape(check_broadcast=True) as t:
            y = (w.broadcast_to((3, 4)) * x).sum()
        t.gradient(y, w)

    def off():
        with tape.Tape() as t:
            y = (w * x).sum()
        t.gradient(y, w)

    assert broadcast_warnings(explicit) == [] and broadcast_warnings(off) == []


def test_check_broadcast_from_the_environment(monkeypatch):
    monkeypatch.setenv("TAPE_CHECK_BROADCAST", "1")
    w, x = f32(3, 1, requires_grad=True), f32(3, 4)

    def step():
        with tape.Tape() as t:
            y = (x * w).mean()
        assert t.check_broadcast
        t.gradient(y, w)

    assert len(broadcast_warnings(step)) == 1
