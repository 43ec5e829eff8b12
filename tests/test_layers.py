"""The house's rules, checked on the source: the kernel imports no feature, no import loops,
components take their own section (never the whole config), and every path the docs name exists.

The import graph is read from the source with ``ast`` (every ``import`` statement, also those
inside functions, which no import-time check sees); only ``if TYPE_CHECKING:`` blocks are exempt.
"""
from __future__ import annotations

import ast
import inspect
import re
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "node"
#: the kernel: what every component builds on; it may import only itself (and the package's version)
KERNEL = {"node.node", "node.events", "node.clock", "node.section", "node.native"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The node modules ``path`` imports, resolved to modules (``from node.x import y`` is node.x.y
    when y is a module, else node.x)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "node" or alias.name.startswith("node."):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "node" or node.module.startswith("node.")):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, modules) - {name} for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
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

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_the_graph_reader_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "node" / "sample.py"
    source.parent.mkdir()
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from node.a import X\n"
                      "def f():\n    from node.b import c\n    import node.d\n")
    assert _imports(source, {"node.b.c"}) == {"node.b.c", "node.d"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_kernel_imports_no_feature_package() -> None:
    graph = import_graph()
    wrong = {module: sorted(imported - KERNEL - {"node"}) for module, imported in graph.items()
             if module in KERNEL and imported - KERNEL - {"node"}}
    assert not wrong, f"kernel modules importing features: {wrong}"


def test_no_import_loops() -> None:
    loops = _cycles(import_graph())
    assert not loops, "import loops (break each with an injected collaborator, an event, or TYPE_CHECKING): " + \
        "; ".join(" <-> ".join(loop) for loop in loops)


def _component_classes() -> list[type]:
    import importlib

    from node.node import Component

    for name in sorted(import_graph()):
        if name not in ("node.__main__",):
            importlib.import_module(name)
    found: list[type] = []
    pending = list(Component.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted({c for c in found if c.__module__.startswith("node.")}, key=lambda c: c.__qualname__)


def _constructor_problems(cls: type, known: dict[str, type]) -> list[str]:
    """What is wrong with ``cls.__init__``: unannotated, whole-config or untyped parameters, and a
    ``config`` that is not the section the component declares (``section``)."""
    from typing import Any

    from node.config import NodeConfig

    problems = []
    hints = typing.get_type_hints(cls.__init__, localns=known)
    parameters = inspect.signature(cls.__init__).parameters
    for name, parameter in list(parameters.items())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            problems.append(f"{cls.__name__}.__init__ takes *{name}")
            continue
        hint = hints.get(name)
        if hint is None:
            problems.append(f"{cls.__name__}.__init__({name}) has no annotation")
        elif hint in (Any, object, NodeConfig) or any(arg in (Any, object, NodeConfig) for arg in typing.get_args(hint)):
            problems.append(f"{cls.__name__}.__init__({name}: {hint}) is the whole config or untyped")
    section = getattr(cls, "section", None)
    if section is None:
        if "config" in parameters:
            problems.append(f"{cls.__name__} takes a config but declares no section")
        return problems
    model: Any = NodeConfig
    for part in section.split("."):
        model = model.model_fields[part].annotation
    if hints.get("config") is not model:
        problems.append(f"{cls.__name__}: config is {hints.get('config')}, [{section}] is {model}")
    return problems


def test_the_constructor_check_catches_a_whole_config_and_an_untyped_collaborator() -> None:
    from typing import Any

    from node.config import NodeConfig
    from node.node import Component, Node
    from node.power.config import BatterySection

    class Greedy(Component):
        section = "battery"

        def __init__(self, node: Node, config: NodeConfig, helper: Any, other=None) -> None:
            super().__init__(node)

    class Mislabelled(Component):
        section = "telemetry"

        def __init__(self, node: Node, config: BatterySection) -> None:
            super().__init__(node, config)

    names = {"Node": Node, "NodeConfig": NodeConfig, "Any": Any, "BatterySection": BatterySection}
    problems = _constructor_problems(Greedy, names) + _constructor_problems(Mislabelled, names)
    assert len(problems) == 5, problems


def test_components_take_their_own_section_never_the_whole_config() -> None:
    """Every constructor parameter is annotated, none is the whole NodeConfig or an untyped
    stand-in (Any, object), and ``config`` is the section the component declares it reads."""
    import sys

    components = _component_classes()
    assert len(components) >= 15, [c.__name__ for c in components]
    # names imported only under TYPE_CHECKING resolve against every class of the package
    known = {name: value for module_name, module in list(sys.modules.items()) if module_name.startswith("node")
             for name, value in vars(module).items() if isinstance(value, type)}
    problems = [problem for cls in components for problem in _constructor_problems(cls, known)]
    assert not problems, "\n".join(problems)


def test_every_section_lives_in_its_packages_config_or_beside_its_owner() -> None:
    """A section of a feature package sits in that package's config.py; the kernel's and the job
    core's ([node], [clock], [jobs], [control]) beside their owner; node/config.py only assembles."""
    from pydantic import BaseModel

    from node.config import NodeConfig
    from node.section import Section

    beside_owner = {"node": "node.node", "clock": "node.clock", "jobs": "node.runner", "control": "node.control"}
    seen: set[type] = set()

    def walk(model: type[BaseModel], key: str) -> list[str]:
        wrong = []
        for name, field in model.model_fields.items():
            for candidate in (field.annotation, *typing.get_args(field.annotation)):
                for inner in (candidate, *typing.get_args(candidate)):
                    if isinstance(inner, type) and issubclass(inner, Section) and inner not in seen:
                        seen.add(inner)
                        dotted = f"{key}.{name}" if key else name
                        top = dotted.split(".")[0]
                        module = inner.__module__
                        expected_ok = module == beside_owner.get(top) or (
                            module.endswith(".config") and module != "node.config")
                        if not expected_ok:
                            wrong.append(f"[{dotted}] {inner.__name__} is in {module}")
                        wrong.extend(walk(inner, dotted))
        return wrong

    wrong = walk(NodeConfig, "")
    assert len(seen) >= 25
    assert not wrong, "\n".join(wrong)


FEATURE_PACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
DOC_FILES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]


def _current_text(doc: Path) -> str:
    """The doc without the old paths of ARCHITECTURE.md's "Where things moved" table (its left column)."""
    lines, in_map = [], False
    for line in doc.read_text().splitlines():
        if line.startswith("#"):
            in_map = line.startswith("### Where things moved")
        if in_map and line.startswith("|"):
            line = line.rstrip("|").rsplit("|", 1)[-1]
        lines.append(line)
    return "\n".join(lines)


def test_every_node_path_the_docs_name_exists() -> None:
    """``node/...`` paths and ``node.x.y`` module names in README, ARCHITECTURE and docs/."""
    missing = []
    for doc in DOC_FILES:
        text = _current_text(doc)
        for match in re.finditer(r"(?<![\w./-])(node/[\w./-]*\w)", text):
            path = match.group(1)
            if not (ROOT / path).exists() and not (ROOT / (path + ".py")).exists():
                missing.append(f"{doc.name}: {path}")
        for match in re.finditer(r"(?<![\w./-])((?:" + "|".join(FEATURE_PACKAGES) + r")/[\w/]*\w\.py)\b", text):
            if not (PACKAGE / match.group(1)).exists():  # a package-relative path: printer/worker.py
                missing.append(f"{doc.name}: {match.group(1)}")
        for match in re.finditer(r"(?<![\w./-])(node(?:\.[a-z_]\w*)+)", text):
            dotted = match.group(1)
            parts = dotted.split(".")
            # the longest prefix that is a module; what follows must be a name defined in it
            for cut in range(len(parts), 0, -1):
                base = ROOT.joinpath(*parts[:cut])
                if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
                    break
            else:
                missing.append(f"{doc.name}: {dotted}")
    assert DOC_FILES and not missing, "\n".join(missing)
