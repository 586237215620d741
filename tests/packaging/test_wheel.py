"""The wheel a user installs: built from this checkout with pip (as ``pip install sonora-cog`` would build it),
with the SPDX license expression, the license file, the type marker and the public testing package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[zipfile.ZipFile, str]:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (path,) = out.glob("sonora_cog-*.whl")
    return zipfile.ZipFile(path), build.stdout + build.stderr


def test_the_license_is_an_spdx_expression_with_its_file(wheel: tuple[zipfile.ZipFile, str]) -> None:
    archive, output = wheel
    (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License"] is None  # the old table form is gone
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    assert "License :: " not in archive.read(metadata_name).decode()  # no classifier beside the expression
    assert "Deprecat" not in output, output


def test_the_wheel_ships_the_type_marker_and_the_testing_package(wheel: tuple[zipfile.ZipFile, str]) -> None:
    names = set(wheel[0].namelist())
    assert "sonora_cog/py.typed" in names
    for module in ("__init__", "fake_discord", "fake_lavalink", "botproc", "discord_client", "pytest_plugin"):
        assert f"sonora_cog/testing/{module}.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
