"""The package's subpackages import each other without a cycle (the status figure's plotting helpers live
below both the loop and the experiments)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "manualbp"


def _subpackage_edges() -> dict:
    edges: dict = {}
    for f in ROOT.rglob("*.py"):
        mod = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts)
        pkg = mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):   # module-level and function-local imports alike
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
            elif isinstance(node, ast.Import):
                target = node.names[0].name
            else:
                continue
            if target.startswith("manualbp."):
                a, b = ".".join(mod.split(".")[:2]), ".".join(target.split(".")[:2])
                if a != b:
                    edges.setdefault(a, set()).add(b)
    return edges


def _cycle(edges: dict):
    state: dict = {}

    def visit(n, path):
        state[n] = "open"
        for m in sorted(edges.get(n, ())):
            if state.get(m) == "open":
                return path + [n, m]
            if m not in state:
                found = visit(m, path + [n])
                if found:
                    return found
        state[n] = "done"
        return None
    for n in sorted(edges):
        if n not in state:
            found = visit(n, [])
            if found:
                return found
    return None


def test_no_import_cycle_between_subpackages():
    edges = _subpackage_edges()
    assert "manualbp.plotting" in edges.get("manualbp.train", set())
    assert _cycle(edges) is None, f"import cycle: {' -> '.join(_cycle(edges))}"


def test_the_cycle_finder_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
