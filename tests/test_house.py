"""The house rules the code can be held to mechanically: imports go one way from a ground
floor, no function dodges a cycle by importing late, no call changes the caller's
process (matplotlib's backend, TensorFlow's global seed), no function over 80 lines,
and `dir(kg)` is `kg.__all__`."""

import ast
import pathlib

import keras
import matplotlib
import numpy as np
import pytest

import keras_gradreg as kg

PACKAGE = pathlib.Path(kg.__file__).parent
GROUND_FLOOR = ("keras_gradreg.per_example", "keras_gradreg.validation")
"""The modules every other may import; they import nothing else from the package."""
LONGEST_FUNCTION = 80


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path, modules: dict) -> tuple:
    """(modules of the package imported at the top, those imported inside functions)."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    top, late = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_gradreg"):
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                     else node.module for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("keras_gradreg")]
        (late if id(node) in inside else top).update(n for n in names if n in modules)
    return top, late


def _graph(include_late: bool) -> dict:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        top, late = _imports(path, modules)
        graph[name] = (top | late if include_late else top) - {name}
    return graph


def _cycle(graph: dict):
    """A cycle of the graph as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == "keras_gradreg":
                continue  # every module's package is initialised first, by Python
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_imports_have_no_cycle_even_counting_imports_inside_functions():
    """A late import that dodged a cycle would close one here."""
    assert _cycle(_graph(include_late=True)) is None


def test_a_cycle_would_be_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_ground_floor_imports_nothing_else_from_the_package():
    graph = _graph(include_late=True)
    for module in GROUND_FLOOR:
        assert graph[module] <= set(GROUND_FLOOR), (module, graph[module])


def test_the_penalty_module_holds_the_penalty_alone():
    public = [n for n in vars(kg.penalty) if not n.startswith("_")
              and getattr(getattr(kg.penalty, n), "__module__", "keras_gradreg.penalty")
              == "keras_gradreg.penalty" and callable(getattr(kg.penalty, n))]
    assert sorted(public) == ["check_options", "default_attack_norm", "direction",
                              "input_gradient_penalty", "penalty_from_clean_pass",
                              "stateless_input_gradient_penalty"]


def test_no_function_is_longer_than_80_lines():
    long = [f"{path.name}:{node.lineno} {node.name}"
            for path in _modules().values()
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > LONGEST_FUNCTION]
    assert long == []


def test_dir_of_the_package_is_its_all():
    assert sorted(dir(kg)) == sorted(kg.__all__)
    assert sorted(dir(kg.attacks)) == sorted(kg.attacks.__all__)


def test_plots_leave_the_callers_matplotlib_backend_alone(tmp_path, monkeypatch):
    """A notebook's inline backend stays: the plots draw on figures of their own."""
    import matplotlib.pyplot as plt

    plt.switch_backend("svg")
    report = kg.RobustnessReport(
        name="m", attack_norm="linf", epsilons=(0.1,), distances=np.array([0.05, np.inf]),
        best_attack=np.array(["pgd", "none"]), attack_distances={}, adversarial=np.zeros((2, 1)),
        indices=np.arange(2), search_tolerance=0.0, checks=[], lower_bounds=None,
        training_time=None, seconds={})
    kg.plotting.plot_error_curves([report], str(tmp_path / "curves.png"))
    assert matplotlib.get_backend() == "svg"
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert plt.get_fignums() == []  # nothing left open in pyplot either


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's global seed")
def test_an_evaluation_leaves_tensorflows_global_seed_alone():
    import tensorflow as tf

    from helpers import batch, linear_classifier

    tf.random.set_seed(1234)
    expected = tf.random.uniform([3]).numpy()
    tf.random.set_seed(1234)
    x, y = batch(n=6)
    kg.evaluate_robustness(linear_classifier(), x, y, attack_norm="linf", epsilons=[0.5],
                           attacks=["pgd"], sanity_checks=False, lower_bound=False, verbose=0,
                           seed=7)
    assert np.array_equal(tf.random.uniform([3]).numpy(), expected)
