"""Shared fixtures. Factories live in ``factories.py`` (importable as ``factories``)."""

from __future__ import annotations

import pytest
from factories import sample_state

from sonora_cog.model import SessionState

# leakcheck: the run fails on an aiohttp session (or another resource) still open at its end
pytest_plugins = ["sonora_cog.testing.pytest_plugin", "leakcheck"]


@pytest.fixture
def state() -> SessionState:
    return sample_state()
