"""Accessors: the small expressions over a call's arguments that give attribute values.

``self.client_address[0]``, ``os.path.getsize(self.translate_path(self.path))``:
names, attributes and methods not starting with ``_`` (but ``__name__``),
constant subscripts, constants, and calls to a few listed functions. They
are parsed and checked when the config loads, and evaluated only while a
tracer is attached; one that raises then is a conversion failure.
"""

import ast
import os

from ..abi.types import Arg
from ..errors import DeclarationError
from ..spans.definition import FAILED
from ..spans.signature import parse_type

#: The functions an accessor may call, by the dotted name it uses.
FUNCTIONS = {
    "len": len, "str": str, "int": int, "float": float, "bool": bool, "abs": abs,
    "min": min, "max": max, "repr": repr, "type": type,
    "os.fspath": os.fspath, "os.getpid": os.getpid,
    "os.path.getsize": os.path.getsize, "os.path.basename": os.path.basename,
    "os.path.dirname": os.path.dirname, "os.path.realpath": os.path.realpath,
    "os.path.abspath": os.path.abspath, "os.path.exists": os.path.exists,
    "os.path.isdir": os.path.isdir, "os.path.isfile": os.path.isfile,
}
#: The name end-attribute accessors read the return value by.
RESULT = "result"
#: The only attributes starting with '_' that accessors may read: names, for labels.
NAME_ATTRIBUTES = ("__name__", "__qualname__")


class Accessor:
    """A compiled accessor expression: ``accessor(env)`` with env = {parameter: value, ...}."""

    def __init__(self, text):
        if not isinstance(text, str):
            raise DeclarationError(f"accessor must be a str, got {text!r}")
        self.text = text
        self.names = set()
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise DeclarationError(f"accessor {text!r}: {exc.msg}") from None
        self._fn = self._compile(tree.body)

    def __call__(self, env):
        return self._fn(env)

    def __repr__(self):
        return f"<Accessor {self.text!r}>"

    def _refuse(self, node, why):
        raise DeclarationError(f"accessor {self.text!r}: {why}")

    def _compile(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            name = node.id
            self.names.add(name)
            return lambda env: env[name]
        if isinstance(node, ast.Attribute):
            attr = self._public(node.attr)
            obj = self._compile(node.value)
            return lambda env: getattr(obj(env), attr)
        if isinstance(node, ast.Subscript):
            key = self._constant_key(node.slice)
            obj = self._compile(node.value)
            return lambda env: obj(env)[key]
        if isinstance(node, ast.Call):
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                self._refuse(node, "calls take plain positional arguments only")
            args = [self._compile(a) for a in node.args]
            dotted = _dotted(node.func)
            if dotted in FUNCTIONS:
                fn = FUNCTIONS[dotted]
                return lambda env: fn(*[a(env) for a in args])
            if isinstance(node.func, ast.Attribute):  # a method of an argument
                method = self._public(node.func.attr)
                obj = self._compile(node.func.value)
                return lambda env: getattr(obj(env), method)(*[a(env) for a in args])
            self._refuse(node, f"{dotted or 'that'} is not a function accessors may call "
                               f"({', '.join(sorted(FUNCTIONS))}), nor a method")
        self._refuse(node, f"{type(node).__name__} is not allowed: use names, .attributes, "
                           "[constant] subscripts, method calls and the listed functions")

    def _public(self, attr):
        if attr.startswith("_") and attr not in NAME_ATTRIBUTES:
            raise DeclarationError(f"accessor {self.text!r}: attribute {attr!r} starts with '_'; "
                                   "accessors reach public attributes (and __name__, __qualname__) only")
        return attr

    def _constant_key(self, node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)):
            return node.value
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, int)):
            return -node.operand.value
        raise DeclarationError(f"accessor {self.text!r}: subscripts must be constant ints or strings")


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _value_source(spec, what):
    """An accessor text or a callable(env) -> a callable(env)."""
    if callable(spec):
        return spec
    return Accessor(spec) if isinstance(spec, str) else _bad(what, spec)


def _bad(what, spec):
    raise DeclarationError(f"{what}: the value must be an accessor expression (str) or a "
                           f"callable taking the arguments dict, got {spec!r}")


def attr_specs(attributes, what):
    """{attribute: (type, value)} -> ([Arg], [value source]): what a hook declares and evaluates."""
    args, sources = [], []
    for name, spec in (attributes or {}).items():
        if isinstance(spec, dict):
            unknown = set(spec) - {"type", "value"}
            if unknown or "type" not in spec or "value" not in spec:
                raise DeclarationError(f"{what} attribute {name!r}: give exactly type and value, "
                                       f"got {sorted(spec)}")
            spec = (spec["type"], spec["value"])
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2):
            raise DeclarationError(f"{what} attribute {name!r}: expected (type, value), got {spec!r}")
        args.append(Arg(name, parse_type(spec[0], f"{what} attribute {name!r}")))
        sources.append(_value_source(spec[1], f"{what} attribute {name!r}"))
    return args, sources


def evaluate(sources, env):
    """The value of each source in ``env``; FAILED (a conversion failure) for one that raises."""
    out = []
    for source in sources:
        try:
            out.append(source(env))
        except Exception:
            out.append(FAILED)
    return tuple(out)
