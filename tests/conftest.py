"""Shared fixtures. Factories live in ``factories.py`` (importable as ``factories``)."""

from __future__ import annotations

import pytest
from factories import sample_state

from sonora_cog.model import SessionState

pytest_plugins = ["sonora_cog.testing.pytest_plugin"]


@pytest.fixture
def state() -> SessionState:
    return sample_state()
