"""Settings: load order, validation messages that name the key, environment overrides, secrets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sonora_cog.config import Settings, describe_options, load_settings
from sonora_cog.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "conf.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.source == "defaults"
    assert settings.snapshots.checkpoint_interval == 10.0
    assert settings.snapshots.auto_interval == 0.0  # adaptive
    assert (settings.snapshots.auto_interval_busy, settings.snapshots.auto_interval_quiet) == (300.0, 1800.0)
    assert settings.limits.max_queue_tracks == 10_000


def test_load_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "[snapshots]\nauto_interval = 1\n", "sonora.toml")
    from_env = write(tmp_path, "[snapshots]\nauto_interval = 2\n", "env.toml")
    explicit = write(tmp_path, "[snapshots]\nauto_interval = 3\n", "explicit.toml")
    assert load_settings(env={}).snapshots.auto_interval == 1
    assert load_settings(env={"SONORA_CONFIG": str(from_env)}).snapshots.auto_interval == 2
    assert load_settings(explicit, env={"SONORA_CONFIG": str(from_env)}).snapshots.auto_interval == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[snapshots]\nauto_interval = "5m"\n', 'snapshots.auto_interval: expected a number of seconds >= 0, got "5m"'),
        ("[snapshots]\nauto_interval = -1\n", "snapshots.auto_interval: expected a number of seconds >= 0, got -1"),
        (
            "[snapshots]\nauto_interval_busy = 0\n",
            "snapshots.auto_interval_busy: expected a positive number of seconds, got 0",
        ),
        (
            "[snapshots]\nauto_interval_quiet = -5\n",
            "snapshots.auto_interval_quiet: expected a positive number of seconds, got -5",
        ),
        (
            "[snapshots]\nauto_interval_busy = 900\nauto_interval_quiet = 600\n",
            "snapshots.auto_interval_busy: must not exceed snapshots.auto_interval_quiet (600), got 900",
        ),
        (
            "[snapshots]\nauto_interval_busy = 2000\n",
            "snapshots.auto_interval_busy: must not exceed snapshots.auto_interval_quiet (1800), got 2000",
        ),
        ("[snapshots]\nauto_intervall = 5\n", "snapshots.auto_intervall: unknown key"),
        ("[snapshot]\nauto_interval = 5\n", "snapshot: unknown section"),
        ('[storage]\ncompression = "lz4"\n', 'storage.compression: expected one of "none", "zstd", got "lz4"'),
        ("[limits]\nmax_queue_tracks = true\n", "limits.max_queue_tracks: expected a whole number from 1 up, got True"),
        ('[commands]\nallowed_role_ids = ["abc"]\n', "commands.allowed_role_ids: expected a list of role ids"),
        ("[restore]\nconcurrency = 500\n", "restore.concurrency: expected a whole number from 1 to 50, got 500"),
        (
            "[restore]\njoins_per_window = 120\n",
            "restore.joins_per_window: expected a whole number from 1 to 110, got 120",
        ),
        ("[restore]\njoins_per_second = 0\n", "restore.joins_per_second: expected a positive number of joins"),
        ("[restore]\njoins_per_second = nan\n", "restore.joins_per_second: expected a positive number of joins"),
        ("[restore]\njoins_per_second = inf\n", "restore.joins_per_second: expected a positive number of joins"),
        ("[snapshots]\nshutdown_timeout = inf\n", "snapshots.shutdown_timeout: expected a positive number"),
        ("[restore]\nrewind_seconds = nan\n", "restore.rewind_seconds: expected a number of seconds >= 0"),
        ("storage = 3\n", "storage: expected a table"),
        ("[storage\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env={})
    assert message in str(info.value)


def test_pacing_defaults_fit_a_100_guild_shard_under_discord_py_s_limiter(tmp_path: Path) -> None:
    restore = load_settings(write(tmp_path, ""), env={}).restore
    assert (restore.joins_per_window, restore.joins_per_second, restore.concurrency) == (100, 1.6, 2)


def test_an_old_config_with_join_burst_loads_with_a_deprecation_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "[restore]\njoins_per_second = 1.5\njoin_burst = 5\n")
    caplog.set_level(logging.WARNING, logger="sonora_cog.config")
    with pytest.warns(FutureWarning, match=r"restore\.join_burst is deprecated and ignored: .*joins_per_window"):
        settings = load_settings(path, env={})
    assert settings.restore.joins_per_second == 1.5
    assert settings.restore.joins_per_window == 100  # not taken from join_burst
    assert not hasattr(settings.restore, "join_burst")
    assert "restore.join_burst is deprecated and ignored" in caplog.text  # in the bot's log, not only stderr
    with pytest.warns(FutureWarning, match=r"SONORA_RESTORE_JOIN_BURST \(environment\) is deprecated"):
        load_settings(write(tmp_path, ""), env={"SONORA_RESTORE_JOIN_BURST": "10"})


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_environment_overrides_a_key_and_is_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "[storage]\npath = 'from-file'\n")
    settings = load_settings(path, env={"SONORA_STORAGE_PATH": "/from/env", "SONORA_RESTORE_ON_STARTUP": "false"})
    assert settings.storage.path == "/from/env"
    assert settings.restore.on_startup is False
    with pytest.raises(ConfigError, match=r'SONORA_SNAPSHOTS_DEBOUNCE \(environment\): .*got "soon"'):
        load_settings(path, env={"SONORA_SNAPSHOTS_DEBOUNCE": "soon"})


def test_secrets_come_from_named_variables_and_never_show(tmp_path: Path) -> None:
    path = write(tmp_path, "[encryption]\nenabled = true\nkey_env = 'MY_KEY'\n")
    settings = load_settings(path, env={"MY_KEY": "s3cr3t-value", "SONORA_OLD_ENCRYPTION_KEYS": "a,b"})
    assert settings.encryption_key is not None and settings.encryption_key.reveal() == "s3cr3t-value"
    assert [k.reveal() for k in settings.old_encryption_keys] == ["a", "b"]
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings.encryption_key)


def test_encryption_enabled_without_key_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[encryption]\nenabled = true\n")
    with pytest.raises(ConfigError, match="SONORA_ENCRYPTION_KEY is empty"):
        load_settings(path, env={})


def test_example_file_documents_every_option_with_its_default() -> None:
    text = (ROOT / "config.example.toml").read_text()
    for section, options in describe_options().items():
        assert f"[{section}]" in text
        for key, (_default, doc) in options.items():
            assert f"\n{key} = " in text, key
            assert doc in text, key
    loaded = load_settings(ROOT / "config.example.toml", env={})
    defaults = Settings()
    for section in describe_options():
        assert getattr(loaded, section) == getattr(defaults, section), section
