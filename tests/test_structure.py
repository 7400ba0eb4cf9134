"""The package's shape: imports run one way (no circle), no private name crosses a module boundary, and no module
reaches another of the plugin's through `sys.modules` or by class-name strings.

The graph is read from the source with `ast`: every `import`/`from ... import` anywhere in a module (function-level
imports count: they are edges too), and every "yolo_attn.module:function" string (the inventory's wrapper factories,
imported at install).
"""

import ast
import re
from pathlib import Path

import yolo_attn

PACKAGE = Path(yolo_attn.__file__).resolve().parent
FACTORY = re.compile(r"^(yolo_attn(?:\.\w+)+):\w+$")


def _modules() -> dict:
    """Return dotted module name -> parsed tree for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


MODULES = _modules()


def _imports(name: str, tree: ast.AST) -> list:
    """Return (target module, imported name or None) for every import of a plugin module in `tree`."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.append((full, None) if full in MODULES else (node.module, alias.name))
        elif isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and FACTORY.match(node.value):
            out.append((FACTORY.match(node.value).group(1), None))
    return [(target, what) for target, what in out if target in MODULES and target != name]


def _graph() -> dict:
    return {name: sorted({t for t, _ in _imports(name, tree)}) for name, tree in MODULES.items()}


def _cycles(graph: dict) -> list:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_every_module():
    graph = _graph()
    assert len(graph) > 30 and "yolo_attn.patches" in graph["yolo_attn.autoload"]
    assert "yolo_attn.parser" in graph["yolo_attn.patches"]  # a factory string is an edge


def test_the_import_graph_has_no_circle():
    assert _cycles(_graph()) == []


def test_a_circle_would_be_found():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_no_private_name_is_imported_from_another_module():
    private = [
        f"{name} imports {target}.{what}"
        for name, tree in MODULES.items()
        for target, what in _imports(name, tree)
        if what and what.startswith("_") and not what.startswith("__")
    ]
    assert private == []


def test_no_private_attribute_of_another_plugin_module_is_used():
    """`module._name` where `module` is a plugin module imported by name (`from yolo_attn import operators`)."""
    bad = []
    for name, tree in MODULES.items():
        aliases = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("yolo_attn")
            for alias in node.names
            if f"{node.module}.{alias.name}" in MODULES
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                bad.append(f"{name}: {node.value.id}.{node.attr}")
    assert bad == []


def test_no_module_reaches_another_through_sys_modules_or_class_name_strings():
    bad = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"yolo_attn(\.\w+)+", node.value) and node.value in MODULES:
                    parent = _parent_call(tree, node)
                    if parent is not None and "sys.modules" in ast.unparse(parent):
                        bad.append(f"{name}: sys.modules lookup of {node.value}")
                if re.fullmatch(r"_\w+OnImport", node.value):
                    bad.append(f"{name}: finds a finder by its class name {node.value!r}")
    assert bad == []


def _parent_call(tree: ast.AST, target: ast.AST) -> ast.AST | None:
    """Return the subscript or call expression that directly holds `target`, if any."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Subscript, ast.Call, ast.Compare)) and any(c is target for c in ast.walk(node)):
            if not any(
                isinstance(c, (ast.Subscript, ast.Call, ast.Compare)) and c is not node and target in ast.walk(c)
                for c in ast.iter_child_nodes(node)
            ):
                return node
    return None
