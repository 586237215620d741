"""The README's "complete test of your bot surviving a SIGKILL": its five files, copied out of the README
into an empty folder, pass under pytest as a user would run them (no configuration of ours applies there),
leaving no resource open (tests/leakcheck.py is added to the run from outside the folder)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
FILES = {
    '"""my_bot.py:': "my_bot.py",
    "# conftest.py": "conftest.py",
    "# pytest.ini": "pytest.ini",
    '"""test_my_bot.py:': "test_my_bot.py",
    '"""test_my_bot_in_process.py:': "test_my_bot_in_process.py",
}


def readme_example() -> dict[str, str]:
    """The README section's code blocks, by the file name their first line gives."""
    text = README.read_text(encoding="utf-8")
    section = re.split(r"\n##+ ", text.split("### A complete test of your bot surviving a SIGKILL", 1)[1], maxsplit=1)[
        0
    ]
    files = {}
    for block in re.findall(r"```(?:python|ini)\n(.*?)```", section, flags=re.S):
        first = block.splitlines()[0]
        names = [name for prefix, name in FILES.items() if first.startswith(prefix)]
        assert names, f"a block of the section names no file: {first!r}"
        files[names[0]] = block
    assert sorted(files) == sorted(FILES.values())
    return files


def test_the_readme_example_passes_in_an_empty_folder(tmp_path: Path) -> None:
    for name, code in readme_example().items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "SONORA_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # our leak check, added from outside the files
    run = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::ResourceWarning",
            "-p",
            "leakcheck",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert re.search(r"\b2 passed\b", run.stdout), run.stdout[-3000:]
    assert "Unclosed" not in run.stdout + run.stderr, run.stdout[-3000:] + run.stderr[-3000:]
