"""The house rules: the loop's stages are places, imports never run in a circle.

Read from the source with ``ast`` (nothing imported): every import of a project module by every module
of ``assets/``, ``resources/`` and ``restem_pipeline/``, including the ones inside functions (a lazy import
is still an arrow). Asserted: no cycle among the modules of the whole house; the layers import one way
(``assets`` -> ``resources`` -> ``restem_pipeline``); among ``restem_pipeline``'s places (``data``,
``generation``, ``rewards``, ``training``, ``evaluation``, ``storage`` and the top-level
``stages``/``cli``/``watch``) the arrows run one way only, with the order below; no module over 460
lines; the framework layer (Dagster) is never imported by ``restem_pipeline``.
"""

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "restem_pipeline"
LAYERS = ["restem_pipeline", "resources", "assets"]  # a layer imports only the layers before it
# a place imports only the places before it in this list
# (``rewards.mathverify`` is a place of its own, below ``data``: loaders parse gold answers with it)
ORDER = [
    "storage", "mathverify", "data", "generation", "rewards", "training", "evaluation",
    "experiments", "watch", "stages", "pretrain", "cli",
]  # fmt: skip


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(packages: tuple[str, ...] = ("restem_pipeline",)) -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in packages for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t.split(".")[0] in packages and t != mod and not mod.startswith(t + "."):
                    graph[mod].add(t)
    return graph


def _place(mod: str) -> str:
    if mod.startswith("restem_pipeline.rewards.mathverify"):
        return "mathverify"
    return mod.split(".")[1] if mod.count(".") else mod


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_among_modules():
    cycle = find_cycle(import_graph(tuple(LAYERS)))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_places_import_one_way_only():
    graph = import_graph()
    upward = sorted(
        f"{m} -> {n}"
        for m, ns in graph.items()
        for n in ns
        if m != "restem_pipeline" and ORDER.index(_place(n)) > ORDER.index(_place(m))
    )
    assert not upward, upward
    assert {_place(m) for m in graph if m != "restem_pipeline"} <= set(ORDER)


def test_modules_are_small_and_framework_free():
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 460, f"{path} has {len(text.splitlines())} lines"
        tree = ast.parse(text)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("dagster", "assets", "resources") for n in names), path


def test_layers_import_one_way_only():
    graph = import_graph(tuple(LAYERS))
    layer = {m: LAYERS.index(m.split(".")[0]) for m in graph}
    upward = sorted(f"{m} -> {n}" for m, ns in graph.items() for n in ns if layer[n] > layer[m])
    assert not upward, upward
    assert graph["assets.paper_run"] >= {"assets.demo", "assets.paper"}  # the graph sees the assets layer


def test_cycle_finder_finds_a_planted_lazy_cycle(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    sources = {"a": "from pkg import b", "b": "def f():\n    from pkg.c import x", "c": "import pkg.a"}
    sources["d"] = "import pkg.c"  # into the cycle, not on it
    for name, text in sources.items():
        (tmp_path / "pkg" / f"{name}.py").write_text(text + "\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    graph = import_graph(("pkg",))
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}, "pkg.d": {"pkg.c"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    assert find_cycle({**graph, "pkg.c": set()}) is None
