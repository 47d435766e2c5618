"""The SDK's layout holds: no import cycle, and no module reaching into another's underscore names.

Read from the source (every import statement, also those inside functions),
so a lazy import that closes a cycle counts too.
"""

import ast
import os

from tests.support import ROOT

SDK = os.path.join(ROOT, "sdk")
#: What SDK code, its tests and the benchmarks may not reach into (tracer code has its own rules).
CHECKED = [os.path.join(SDK, "spanprobe"), os.path.join(ROOT, "tests", "sdk"), os.path.join(ROOT, "tests", "support"),
           os.path.join(ROOT, "bench")]
#: Underscore names of the standard library that are its public API.
STDLIB_PUBLIC = {"_exit", "_replace", "_asdict", "_fields"}


def python_files(top):
    for dirpath, _, files in os.walk(top):
        yield from (os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".py"))


def sdk_modules():
    """{dotted module name: path} of the spanprobe package."""
    out = {}
    for path in python_files(os.path.join(SDK, "spanprobe")):
        name = os.path.relpath(path, SDK)[:-3].replace(os.sep, ".")
        out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def imports(module, path, modules):
    """The spanprobe modules ``module`` imports, its own subpackage's modules left out of a package's."""
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


def test_no_import_cycle_between_modules_or_packages():
    modules = sdk_modules()
    graph = {m: imports(m, p, modules) for m, p in modules.items()}
    assert cycle(graph) is None
    packages = {}
    for module, targets in graph.items():
        packages.setdefault(layer(module), set()).update(
            layer(t) for t in targets if layer(t) not in (layer(module), "spanprobe"))
    assert cycle(packages) is None, "packages must import down the stages, never back up"


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
