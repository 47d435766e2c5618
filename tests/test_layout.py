"""The layout holds, SDK and tracer alike: no import cycle, stages import the right way, and no
module reaches into another's underscore names.

Read from the source (every import statement, also those inside functions),
so a lazy import that closes a cycle counts too.
"""

import ast
import os

import pytest

from tests.support import ROOT

#: package -> the directory holding it.
SOURCES = {"spanprobe": os.path.join(ROOT, "sdk"), "spanprobe_tracer": os.path.join(ROOT, "tracer")}
#: The tracer's packages in the order data flows through them: each imports only from those
#: before it (and from the top-level modules every stage shares, errors and text).
TRACER_STAGES = ["discover", "kernel", "decode", "assemble", "export", "session", "cli"]
#: What code, its tests and the benchmarks may not reach into.
CHECKED = [os.path.join(SOURCES["spanprobe"], "spanprobe"), os.path.join(SOURCES["spanprobe_tracer"], "spanprobe_tracer"),
           os.path.join(ROOT, "tests"), os.path.join(ROOT, "bench")]
#: Underscore names of the standard library that are its public API.
STDLIB_PUBLIC = {"_exit", "_replace", "_asdict", "_fields"}


def python_files(top):
    for dirpath, _, files in os.walk(top):
        yield from (os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".py"))


def package_modules(package):
    """{dotted module name: path} of ``package`` (spanprobe or spanprobe_tracer)."""
    src = SOURCES[package]
    out = {}
    for path in python_files(os.path.join(src, package)):
        name = os.path.relpath(path, src)[:-3].replace(os.sep, ".")
        out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def imports(module, path, modules):
    """The ``modules`` that ``module`` imports, its own subpackage's modules left out of a package's."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module and not target.startswith(module + "."):
                found.add(target)
    return found


def cycle(graph):
    """One cycle of ``graph`` ({node: {node}}) as a list, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
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


def layer(module):
    """spanprobe.probes.loader -> spanprobe.probes; top-level modules are their own layer."""
    return ".".join(module.split(".")[:2])


def package_graph(package):
    """({module: modules it imports}, {layer: layers it imports}) of ``package``."""
    modules = package_modules(package)
    graph = {m: imports(m, p, modules) for m, p in modules.items()}
    layers = {}
    for module, targets in graph.items():
        layers.setdefault(layer(module), set()).update(
            layer(t) for t in targets if layer(t) not in (layer(module), package))
    return graph, layers


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_no_import_cycle_between_modules_or_packages(package):
    graph, layers = package_graph(package)
    assert cycle(graph) is None
    assert cycle(layers) is None, "packages must import down the stages, never back up"


def test_tracer_stages_import_only_the_stages_before_them():
    _, layers = package_graph("spanprobe_tracer")
    stages = ["spanprobe_tracer." + s for s in TRACER_STAGES]
    assert set(stages) <= set(layers), "a stage package is missing: update TRACER_STAGES"
    backwards = {(a, b) for a, targets in layers.items() if a in stages
                 for b in targets if b in stages and stages.index(b) >= stages.index(a)}
    assert backwards == set()
    shared = {a for a in layers if a not in stages and a != "spanprobe_tracer.bpf"}
    assert all(not (layers[a] & set(stages)) for a in shared), "errors and text import no stage"


def defined_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__slots__" for t in node.targets):
            names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    return names


def reach_ins(path):
    """``x._name`` for a _name this file never defines, and ``from m import _name``."""
    tree = ast.parse(open(path).read())
    own = defined_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if name.startswith("_") and not name.endswith("__") and name not in own | STDLIB_PUBLIC:
                yield f"{os.path.relpath(path, ROOT)}:{node.lineno}: .{name}"
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.endswith("__"):
                    yield f"{os.path.relpath(path, ROOT)}:{node.lineno}: from {node.module} import {alias.name}"


def test_no_module_reaches_into_another_modules_underscore_names():
    found = [hit for top in CHECKED for path in python_files(top) for hit in reach_ins(path)]
    assert found == []


def test_every_package_is_listed_for_the_wheel():
    """pyproject's explicit `packages` list names every package of the SDK and the tracer: an editable
    install imports one that is missing, a built wheel would silently lack it."""
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {m for package in SOURCES for m, path in package_modules(package).items()
             if path.endswith("__init__.py")}
    assert found - listed == set()
