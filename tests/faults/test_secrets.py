"""A secret pasted where it does not belong is never echoed: errors name the variable, not its content."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from sonora_cog.config import load_settings
from sonora_cog.errors import ConfigError
from sonora_cog.keyring import Keyring
from sonora_cog.manager import SessionManager

B64_KEY = Keyring.generate_key_text()
HEX_KEY = secrets.token_hex(32)


@pytest.mark.parametrize("key", [B64_KEY, HEX_KEY], ids=["base64", "hex"])
@pytest.mark.parametrize(
    "field", ["SONORA_ENCRYPTION_KEY_ENV", "SONORA_ENCRYPTION_OLD_KEYS_ENV", "SONORA_STORAGE_REDIS_PASSWORD_ENV"]
)
def test_a_key_pasted_as_a_variable_name_is_refused_and_never_shown(key: str, field: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, env={field: key})
    message = str(raised.value)
    assert key not in message and key[:12] not in message
    assert field in message and "looks like a key" in message and "not shown" in message


def test_a_key_pasted_as_a_variable_name_in_the_file_is_refused_and_never_shown(tmp_path: Path) -> None:
    config = tmp_path / "sonora.toml"
    config.write_text(f'[encryption]\nenabled = true\nkey_env = "{HEX_KEY}"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(config, env={})
    assert HEX_KEY not in str(raised.value) and "encryption.key_env" in str(raised.value)


@pytest.mark.parametrize("variable", ["SONORA_ENCRYPTION_KEY", "SONORA_OLD_ENCRYPTION_KEYS"])
def test_a_malformed_key_names_its_variable_not_its_value(variable: str) -> None:
    broken = base64.urlsafe_b64encode(os.urandom(31)).decode()  # one byte short: a typo'd real key
    env = {"SONORA_ENCRYPTION_ENABLED": "true", "SONORA_ENCRYPTION_KEY": B64_KEY, variable: broken}
    settings = load_settings(None, env=env)
    with pytest.raises(ConfigError) as raised:
        SessionManager(settings)
    message = str(raised.value)
    assert message.startswith(f"{variable} (environment)") and "not a valid key" in message
    assert broken not in message and B64_KEY not in message


def test_the_cli_never_prints_a_key_from_a_bad_setting(tmp_path: Path) -> None:
    env = {**os.environ, "SONORA_ENCRYPTION_KEY_ENV": HEX_KEY, "SONORA_CONFIG": str(tmp_path / "missing.toml")}
    env.pop("SONORA_CONFIG")
    out = subprocess.run(
        [sys.executable, "-m", "sonora_cog", "snapshots", "list", "--store", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 4  # configuration error
    assert HEX_KEY not in out.stdout + out.stderr and "SONORA_ENCRYPTION_KEY_ENV" in out.stderr
