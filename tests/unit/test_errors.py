"""The error hierarchy is what the README says: every exception lives in ``sonora_cog.errors``, is
documented in the README's Errors table, and is raised somewhere (or is the base of one that is)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import sonora_cog
from sonora_cog import errors

ROOT = Path(sonora_cog.__file__).parent
README = ROOT.parent / "README.md"


def product_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages([str(ROOT)], "sonora_cog.")]
    return [n for n in names if ".testing" not in n and n not in ("sonora_cog.__main__",)]


def constructed_names() -> set[str]:
    """Every name called like a constructor in the product's code (``raise X(...)``, ``return X(...)``)."""
    names: set[str] = set()
    for path in ROOT.rglob("*.py"):
        if "testing" in path.parts or path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def test_every_exception_class_lives_in_errors() -> None:
    strays = []
    for name in product_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            defined_here = inspect.isclass(value) and value.__module__ == name != "sonora_cog.errors"
            if defined_here and issubclass(value, BaseException):
                strays.append(f"{name}.{attr}")
    assert strays == []


def test_every_error_is_documented_in_the_readme() -> None:
    text = README.read_text()
    section = text[text.index("### Errors") : text.index("## Configuration")]
    documented = set(re.findall(r"`([A-Z][A-Za-z]+)`", section))
    assert set(errors.__all__) <= documented, set(errors.__all__) - documented
    exported = {
        n
        for n in dir(sonora_cog)
        if inspect.isclass(getattr(sonora_cog, n)) and issubclass(getattr(sonora_cog, n), BaseException)
    }
    assert exported == set(errors.__all__)  # importable from the package, as the README says


def test_every_error_is_raised_or_is_the_base_of_one_that_is() -> None:
    made = constructed_names()
    classes = {name: getattr(errors, name) for name in errors.__all__}
    raised = {name for name in classes if name in made}
    bases = {name for name, cls in classes.items() if any(issubclass(classes[r], cls) for r in raised)}
    assert set(classes) == raised | bases, set(classes) - raised - bases


def test_the_cog_class_is_importable_from_the_package() -> None:
    from sonora_cog import SonoraCog
    from sonora_cog.cog import SonoraCog as Home

    assert SonoraCog is Home and "SonoraCog" in sonora_cog.__all__
    with pytest.raises(AttributeError, match="no attribute 'SonoraBot'"):
        sonora_cog.SonoraBot  # noqa: B018
