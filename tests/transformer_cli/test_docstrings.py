"""Every public name of the library says what it does: each module-level function and class of
transformer_cli/ without a leading underscore, and each public method of those classes, has a
docstring."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "transformer_cli"
MODULES = sorted(PACKAGE.rglob("*.py"))


def public(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")


def undocumented(tree: ast.Module) -> list[str]:
    """Public module-level functions and classes, and public methods of public classes, without a
    docstring (dotted names, Class.method)."""
    missing = []
    for node in filter(public, tree.body):
        if ast.get_docstring(node) is None:
            missing.append(node.name)
        if isinstance(node, ast.ClassDef):
            missing += [f"{node.name}.{m.name}" for m in filter(public, node.body)
                        if not isinstance(m, ast.ClassDef) and ast.get_docstring(m) is None]
    return missing


def test_the_scanner_sees_each_kind_of_name():
    code = ('def f(): pass\ndef _g(): pass\nclass A:\n    """A."""\n    def m(self): pass\n'
            '    def _n(self): pass\n    def __init__(self): pass\n    @property\n    def p(self):\n        """P."""\n'
            'class _B:\n    def m(self): pass\ndef h():\n    """H."""\n    def inner(): pass\n')
    assert undocumented(ast.parse(code)) == ["f", "A.m"]


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_every_public_name_has_a_docstring(path):
    assert undocumented(ast.parse(path.read_text())) == []
