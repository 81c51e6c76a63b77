"""`_core.pyi` describes the extension module exactly: the same names, and for every function,
class constructor and method the same parameters in the same order."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import ferrobatch
from ferrobatch import _core

STUB = Path(ferrobatch.__file__).with_name("_core.pyi")


def _params(node: ast.FunctionDef) -> list[str]:
    a = node.args
    return [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs] if p.arg != "self"]


def _stub() -> dict[str, object]:
    """name -> parameter list (functions) or {member: parameter list | "property"} (classes)."""
    out: dict[str, object] = {}
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = _params(node)
        elif isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id.endswith("Error") for b in node.bases
        ):
            out[node.name] = "exception"
        elif isinstance(node, ast.ClassDef):
            members: dict[str, object] = {}
            for m in node.body:
                if isinstance(m, ast.FunctionDef):
                    prop = any(
                        isinstance(d, ast.Name) and d.id == "property" for d in m.decorator_list
                    )
                    members[m.name] = "property" if prop else _params(m)
            out[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = "attribute"
    return out


def _runtime() -> dict[str, object]:
    out: dict[str, object] = {}
    for name in dir(_core):
        if name.startswith("__") and name != "__version__":
            continue
        obj = getattr(_core, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            out[name] = "exception"
        elif inspect.isclass(obj):
            members: dict[str, object] = {
                "__init__": [p for p in inspect.signature(obj).parameters]
            }
            for m, v in vars(obj).items():
                if m.startswith("_"):
                    continue
                if inspect.isgetsetdescriptor(v) or isinstance(v, property):
                    members[m] = "property"
                else:
                    members[m] = [p for p in inspect.signature(v).parameters if p != "self"]
            out[name] = members
        elif callable(obj):
            out[name] = list(inspect.signature(obj).parameters)
        else:
            out[name] = "attribute"
    return out


def test_stub_matches_the_extension_module():
    assert _stub() == _runtime()
