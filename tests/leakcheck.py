"""pytest plugin: the run fails when it leaves an aiohttp session (or another resource) open.

``filterwarnings`` in ``pyproject.toml`` makes a ``ResourceWarning`` an error, and a ``ResourceWarning``
raised from a ``__del__`` (how aiohttp reports an unclosed ``ClientSession``) reaches pytest as an
unraisable exception, which the ``PytestUnraisableExceptionWarning`` filter makes an error of the test
that was running when the garbage collector found it. Neither sees a session that is still referenced
when the last test ends (by a module, or by a class such as ``wavelink.Pool``): Python reports it at
interpreter exit, after pytest has counted the run as green.

The session-scoped ``no_resource_left_open`` fixture closes that gap. It is set up before any other
fixture, so it is torn down after all of them, at the end of the run: it collects garbage (a
``ResourceWarning`` that produces is recorded) and looks for every aiohttp ``ClientSession`` and
connector still open; any of them fails the run as an error at teardown of the last test.

Enable it with ``pytest_plugins = ["leakcheck"]`` (``tests/conftest.py`` does).
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import aiohttp
import pytest

__all__ = ("no_resource_left_open", "resources_left_open")


def resources_left_open() -> list[str]:
    """Collect garbage, then describe every ``ResourceWarning`` it raised and every aiohttp session or
    connector that is still open."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    found = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    found += [
        f"still open at the end of the run: {obj!r}"
        for obj in gc.get_objects()
        if isinstance(obj, aiohttp.ClientSession | aiohttp.BaseConnector) and not obj.closed
    ]
    return found


@pytest.fixture(scope="session", autouse=True)
def no_resource_left_open() -> Iterator[None]:
    """Fail the run if a resource is left open at its end (see the module docstring)."""
    yield
    if leaks := resources_left_open():
        pytest.fail("resources left open by the test run:\n" + "\n".join(f"  {leak}" for leak in leaks), pytrace=False)
