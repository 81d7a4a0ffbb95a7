"""The house rules of ``restem_pipeline/``: the loop's stages are places, imports never run in a circle.

Read from the source with ``ast`` (nothing imported): every ``restem_pipeline`` import of every module,
including the ones inside functions (a lazy import is still an arrow). Asserted: no cycle among the
modules; among the places (``data``, ``generation``, ``rewards``, ``training``, ``evaluation``,
``storage`` and the top-level ``stages``/``cli``/``watch``) the arrows run one way only, with the order
below; no module over 460 lines; the framework layer (Dagster) is never imported by ``restem_pipeline``.
"""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "restem_pipeline"
# a place imports only the places before it in this list
# (``rewards.mathverify`` is a place of its own, below ``data``: loaders parse gold answers with it)
ORDER = [
    "storage", "mathverify", "data", "generation", "rewards", "training", "evaluation",
    "experiments", "watch", "stages", "cli",
]  # fmt: skip


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
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
                if t and t.startswith("restem_pipeline.") and t != mod and not mod.startswith(t + "."):
                    graph[mod].add(t)
    return graph


def _place(mod: str) -> str:
    if mod.startswith("restem_pipeline.rewards.mathverify"):
        return "mathverify"
    return mod.split(".")[1] if mod.count(".") else mod


def test_no_import_cycle_among_modules():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(n) :], n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


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
