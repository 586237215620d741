"""The test run fails on a resource left open (issue 14): a small test file runs under the project's own
pytest configuration (the ``filterwarnings`` of ``pyproject.toml`` and the ``leakcheck`` plugin of
``tests/conftest.py``) in a subprocess, and must fail when it leaks an aiohttp ``ClientSession``, whether
it is found during the run or still open at its end, and pass when the session is closed.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

LEAK_IN_A_TEST = """
import aiohttp

async def test_forgets_to_close():
    aiohttp.ClientSession()
"""

LEAK_AT_THE_END = """
import aiohttp

HELD = []  # a module keeps it: only the interpreter's exit would finalise it

async def test_keeps_it_open():
    HELD.append(aiohttp.ClientSession())
"""

CLOSED = """
import aiohttp

async def test_closes_it():
    async with aiohttp.ClientSession():
        pass
"""


def ini_options() -> dict[str, Any]:
    """The project's ``[tool.pytest.ini_options]``."""
    options: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    return options


@pytest.fixture
def project_config(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester directory with the project's ``[tool.pytest.ini_options]`` and ``leakcheck`` plugin."""
    options = {key: value for key, value in ini_options().items() if key != "testpaths"}
    lines = [f"{key} = {json.dumps(value)}" for key, value in options.items()]  # str and [str]: JSON is TOML
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n" + "\n".join(lines) + "\n")
    pytester.makeconftest('pytest_plugins = ["leakcheck"]\n')
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    return pytester


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_it=source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_the_configuration_asks_for_it() -> None:
    filters = set(ini_options()["filterwarnings"])
    assert {"error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"} <= filters
    assert "leakcheck" in (ROOT / "tests" / "conftest.py").read_text()


def test_a_session_leaked_by_a_test_fails_the_run(project_config: pytest.Pytester) -> None:
    result = run(project_config, LEAK_IN_A_TEST)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*Unclosed client session*"])


def test_a_session_still_open_at_the_end_fails_the_run(project_config: pytest.Pytester) -> None:
    result = run(project_config, LEAK_AT_THE_END)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*resources left open by the test run*", "*still open at the end of the run*"])
    # without the plugin, filterwarnings alone lets it through: Python only reports it at exit
    assert run(project_config, LEAK_AT_THE_END, "-p", "no:leakcheck").ret == 0


def test_a_closed_session_passes(project_config: pytest.Pytester) -> None:
    result = run(project_config, CLOSED)
    result.assert_outcomes(passed=1)
    assert result.ret == 0
