"""Settings: typed, loaded from TOML and the environment, validated with errors that name the key.

Which file: an explicit path > the ``SONORA_CONFIG`` environment variable > ``./sonora.toml`` >
built-in defaults. Then single keys can be overridden from the environment as
``SONORA_<SECTION>_<KEY>`` (``SONORA_STORAGE_PATH=/var/lib/sonora``).

Secrets (the encryption keys, the Redis password) are never written in the file: the file names the
environment variables that hold them, and they are read here, once, into :class:`Secret` values
whose ``repr`` hides them. This is the only module of sonora_cog that reads ``os.environ``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .model import Limits

__all__ = (
    "CommandSettings",
    "DeploySettings",
    "EncryptionSettings",
    "FailoverSettings",
    "LimitSettings",
    "MetricsSettings",
    "RestoreSettings",
    "Secret",
    "Settings",
    "SnapshotSettings",
    "StorageSettings",
    "load_settings",
)

_log = logging.getLogger(__name__)

DEFAULT_FILE = "sonora.toml"
CONFIG_ENV = "SONORA_CONFIG"


class Secret:
    """A secret string whose ``repr``/``str`` never show it. Read it with :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself; never log it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# -- value checks: each returns the normalised value or raises ValueError("expected ...") ---------------


def _positive(unit: str) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ValueError(f"expected a positive number of {unit}")
        return float(value)

    return check


_positive_seconds = _positive("seconds")


def _non_negative_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError("expected a number of seconds >= 0")
    return float(value)


def _int_range(low: int, high: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            raise ValueError(f"expected a whole number from {low}" + (f" to {high}" if high else " up"))
        return value

    return check


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError("expected a number from 0 to 1")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _optional_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError('expected a string ("" for none)')
    return value


def _env_name(value: Any) -> str:
    if isinstance(value, str) and _looks_like_a_key(value):
        raise ValueError(
            "expected the NAME of an environment variable, and this looks like a key itself: put the key in "
            "an environment variable and its name here"
        )
    if not isinstance(value, str) or not value.replace("_", "").isalnum() or not value.isascii():
        raise ValueError("expected the NAME of an environment variable (letters, digits, _)")
    return value


def _looks_like_a_key(value: str) -> bool:
    """A long run of base64 or hex: a key (or password) pasted where a name belongs.

    32+ characters of ``[A-Za-z0-9+/=_-]`` that mix letter cases or letters and digits, unless they read as
    an identifier: UPPER_CASE (a variable name; with 4+ digits it counts as hex) or short one-case words
    joined by ``_``/``-``.
    """
    text = value.strip()
    if len(text) < 32 or not _KEY_CHARS.fullmatch(text):
        return False
    digits = sum(c.isdigit() for c in text)
    if _UPPER_NAME.fullmatch(text):
        return digits >= 4
    lower, upper = any(c.islower() for c in text), any(c.isupper() for c in text)
    words = re.split(r"[_-]", text)
    if not (lower and upper) and len(words) >= 4 and max(len(w) for w in words) <= 12:
        return False  # production_bot_cluster_eu_west_1: a name
    return (lower and upper) or (digits > 0 and (lower or upper))


_KEY_CHARS = re.compile(r"[A-Za-z0-9+/=_-]+")
_UPPER_NAME = re.compile(r"[A-Z0-9_]+")


_KEYISH = re.compile(r"[A-Za-z0-9+/=_-]{32,}")


def _contains_a_key(text: str) -> bool:
    """Whether ``text`` (a value as an error would show it) holds a run that looks like a key."""
    return any(_looks_like_a_key(run) for run in _KEYISH.findall(text))


def _prefix(value: Any) -> str:
    text = _text(value)
    if _looks_like_a_key(text):
        raise ValueError("expected a short key prefix, and this looks like a key or password itself")
    return text


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError("expected one of " + ", ".join(f'"{o}"' for o in options))
        return str(value)

    return check


def _snowflakes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of role ids")
    out = []
    for item in value:
        if isinstance(item, str) and item.isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
            raise ValueError("expected a list of role ids (numbers or strings of digits)")
        out.append(item)
    return tuple(out)


# -- sections -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """``[storage]``: where and how records are written."""

    backend: str = "filesystem"
    path: str = "./sonora_data"
    compression: str = "none"
    compression_level: int = 3
    max_record_bytes: int = 8 * 1024 * 1024
    max_payload_bytes: int = 32 * 1024 * 1024
    syncfs: bool = True
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "sonora"
    redis_password_env: str = "SONORA_REDIS_PASSWORD"  # noqa: S105 (a variable name, not a password)
    redis_tls_ca_file: str = ""
    redis_timeout: float = 5.0
    redis_buffer_max_records: int = 10_000
    redis_buffer_max_bytes: int = 64 * 1024 * 1024
    lease_ttl: float = 15.0
    lease_renew_interval: float = 5.0
    lease_wait: float = 60.0


@dataclass(frozen=True, slots=True)
class EncryptionSettings:
    """``[encryption]``: AES-256-GCM at rest; keys come from environment variables."""

    enabled: bool = False
    key_env: str = "SONORA_ENCRYPTION_KEY"
    old_keys_env: str = "SONORA_OLD_ENCRYPTION_KEYS"


@dataclass(frozen=True, slots=True)
class SnapshotSettings:
    """``[snapshots]``: checkpoints, automatic snapshots and retention."""

    checkpoint_interval: float = 10.0
    debounce: float = 1.0
    auto_enabled: bool = True
    auto_interval: float = 0.0
    auto_interval_busy: float = 300.0
    auto_interval_quiet: float = 1800.0
    max_snapshots_per_guild: int = 25
    max_age_days: float = 30.0
    retention_interval: float = 86_400.0
    shutdown_timeout: float = 8.0


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """``[limits]``: caps on what is captured and what is accepted from a record."""

    max_queue_tracks: int = 10_000
    max_history_tracks: int = 100
    max_string_length: int = 4_096
    max_extras_bytes: int = 16_384

    def to_limits(self) -> Limits:
        """The model's :class:`~sonora_cog.model.Limits` for these settings."""
        return Limits(
            max_queue_tracks=self.max_queue_tracks,
            max_history_tracks=self.max_history_tracks,
            max_string_length=self.max_string_length,
            max_extras_bytes=self.max_extras_bytes,
        )


@dataclass(frozen=True, slots=True)
class RestoreSettings:
    """``[restore]``: how players come back.

    Voice joins are paced per shard connection (:mod:`sonora_cog.pacing`): up to ``joins_per_window``
    in any 60 s, at once while they fit, then ``joins_per_second``. The default 100 stays under
    discord.py's 110 sends per 60 s (and Discord's 120 with heartbeats), leaving room for the bot's
    own gateway traffic during the restore, and lets a shard restore 100 guilds at once. The default
    ``joins_per_second`` (1.6, about 100 per 62 s) lets a shard with more guilds restore 100 more each
    time a window has passed, within a few percent of what Discord's window allows.

    .. versionchanged:: 0.5
        ``join_burst`` (one token bucket for the whole process) is replaced by ``joins_per_window``
        per shard; a config that still sets it loads, with a warning, and the value is ignored.
        ``concurrency`` counts per shard.
    """

    on_startup: bool = True
    max_age: float = 6 * 3600.0
    rewind_seconds: float = 2.0
    skip_empty_channels: bool = False
    concurrency: int = 2
    joins_per_window: int = 100
    joins_per_second: float = 1.6
    verify: bool = True
    verify_tolerance_ms: int = 5_000
    on_node_reconnect: bool = True
    on_voice_lost: bool = True
    resume_lavalink_sessions: bool = True
    lavalink_resume_timeout: int = 60


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """``[commands]``: the ``/snapshot`` slash commands."""

    enabled: bool = True
    allowed_role_ids: tuple[int, ...] = ()
    page_size: int = 10
    import_max_bytes: int = 2 * 1024 * 1024
    confirm_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class DeploySettings:
    """``[deploy]``: deploy tags, rollback requests (see the README's "Deploying")."""

    keep_tags: int = 3
    batch_size: int = 5
    pause: float = 10.0
    poll_interval: float = 2.0
    request_max_age: float = 300.0
    track_restores_for: float = 3600.0
    owner_command: bool = False
    handover: bool = True
    handover_batch_size: int = 5
    handover_pause: float = 10.0
    handover_timeout: float = 60.0
    max_failure_ratio: float = 0.5


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    """``[failover]``: moving players off a Lavalink node that died or is drained (README: "More than one
    Lavalink node").

    .. versionadded:: 0.4
    """

    enabled: bool = True
    grace_seconds: float = 10.0
    probe_interval: float = 5.0
    concurrency: int = 5
    per_node_concurrency: int = 2
    drain_batch_size: int = 5
    drain_pause: float = 2.0
    owner_command: bool = False


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: Prometheus metrics (needs ``sonora-cog[metrics]``; see the README's "Metrics").

    .. versionadded:: 0.3
    """

    enabled: bool = False
    port: int = 0
    address: str = "127.0.0.1"


_CHECKS: dict[str, dict[str, tuple[Callable[[Any], Any], str]]] = {
    "storage": {
        "backend": (_choice("filesystem", "redis"), "where records live: a directory, or a shared Redis"),
        "path": (_text, "directory of the filesystem store (created owner-only)"),
        "compression": (_choice("none", "zstd"), 'compress records; "zstd" needs sonora-cog[zstd]'),
        "compression_level": (_int_range(1, 22), "zstd level, 1 (fast) to 22 (small)"),
        "max_record_bytes": (_int_range(1024), "largest stored record accepted, in bytes"),
        "max_payload_bytes": (_int_range(1024), "largest decompressed record accepted, in bytes"),
        "syncfs": (
            _boolean,
            "make a batch of 32+ records durable with one syncfs(2) of the store's filesystem "
            "(Linux 5.8+), not one fsync per file; false on a disk other programs write much to",
        ),
        "redis_url": (_text, 'Redis URL for backend = "redis" (rediss:// for TLS); no password here'),
        "redis_prefix": (_prefix, "prefix of every Redis key sonora_cog writes"),
        "redis_password_env": (_env_name, "NAME of the environment variable holding the Redis password"),
        "redis_tls_ca_file": (_optional_text, 'CA bundle to verify a rediss:// server ("" = the system CAs)'),
        "redis_timeout": (_positive_seconds, "seconds to wait for Redis before it counts as unreachable"),
        "redis_buffer_max_records": (_int_range(1), "writes kept in memory while Redis is unreachable"),
        "redis_buffer_max_bytes": (_int_range(1024), "bytes of writes kept in memory while Redis is unreachable"),
        "lease_ttl": (_positive_seconds, "seconds a process keeps a guild after it stops renewing (crash)"),
        "lease_renew_interval": (_positive_seconds, "seconds between lease renewals (below lease_ttl)"),
        "lease_wait": (_non_negative_seconds, "seconds a new process waits for another one to release a guild"),
    },
    "encryption": {
        "enabled": (_boolean, "encrypt records with AES-256-GCM; needs sonora-cog[crypto]"),
        "key_env": (_env_name, "NAME of the variable holding the current key (python -m sonora_cog keygen)"),
        "old_keys_env": (_env_name, "NAME of the variable holding older keys, comma separated (rotation)"),
    },
    "snapshots": {
        "checkpoint_interval": (_positive_seconds, "seconds between checkpoints of dirty or playing guilds"),
        "debounce": (_non_negative_seconds, "delay before a changed guild's live record is written (s)"),
        "auto_enabled": (_boolean, "take automatic snapshots"),
        "auto_interval": (
            _non_negative_seconds,
            "seconds between each guild's auto snapshots (unchanged guilds get none); 0 = adaptive (busy..quiet)",
        ),
        "auto_interval_busy": (_positive_seconds, "adaptive: seconds between auto snapshots of a busy guild"),
        "auto_interval_quiet": (
            _positive_seconds,
            "adaptive: seconds between auto snapshots of a quiet guild (no listeners, no changes)",
        ),
        "max_snapshots_per_guild": (_int_range(1), "keep at most this many snapshots per guild"),
        "max_age_days": (_positive("days"), "delete snapshots older than this many days"),
        "retention_interval": (_positive_seconds, "seconds between retention runs"),
        "shutdown_timeout": (
            _positive_seconds,
            "seconds a graceful stop may spend writing the final state (then ~6 s more at most)",
        ),
    },
    "limits": {
        "max_queue_tracks": (_int_range(1), "most tracks accepted in one queue list"),
        "max_history_tracks": (_int_range(0), "most history tracks captured"),
        "max_string_length": (_int_range(64), "longest text field accepted (titles, urls...)"),
        "max_extras_bytes": (_int_range(256), "largest bot extras / track userData accepted, in JSON bytes"),
    },
    "restore": {
        "on_startup": (_boolean, "restore every guild's live record when the bot starts"),
        "max_age": (_positive_seconds, "live records older than this (seconds) are not revived"),
        "rewind_seconds": (_non_negative_seconds, "resume this many seconds before the recorded position"),
        "skip_empty_channels": (_boolean, "skip guilds whose voice channel has no listeners"),
        "concurrency": (_int_range(1, 50), "guilds of one shard restored at the same time (shards run side by side)"),
        "joins_per_window": (
            _int_range(1, 110),
            "voice joins per shard in any 60 s, at once while they fit (Discord: 120 gateway sends per 60 s with "
            "heartbeats; discord.py: 110)",
        ),
        "joins_per_second": (
            _positive("joins per second"),
            "voice joins per second per shard once joins_per_window is spent",
        ),
        "verify": (_boolean, "check the live player after a restore; roll back if it differs"),
        "verify_tolerance_ms": (_int_range(0), "position tolerance of that check, in ms"),
        "on_node_reconnect": (_boolean, "rebuild players when a Lavalink node comes back without them"),
        "on_voice_lost": (_boolean, "rejoin when a voice connection is lost by accident"),
        "resume_lavalink_sessions": (
            _boolean,
            "resume the Lavalink session after a bot restart (SonoraCog.connect_nodes): its players play on",
        ),
        "lavalink_resume_timeout": (
            _int_range(1, 3600),
            "seconds Lavalink keeps a session and its players after the bot went away",
        ),
    },
    "commands": {
        "enabled": (_boolean, "register the /snapshot slash commands"),
        "allowed_role_ids": (
            _snowflakes,
            "roles allowed besides Manage Server (also grant them /snapshot in Server Settings > Integrations)",
        ),
        "page_size": (_int_range(1, 25), "snapshots per page in /snapshot list"),
        "import_max_bytes": (_int_range(1024), "largest attachment /snapshot import accepts"),
        "confirm_timeout": (_positive_seconds, "seconds a restore confirmation button stays active"),
    },
    "deploy": {
        "keep_tags": (_int_range(0), "retention never deletes the pre-deploy snapshots of this many newest tags"),
        "batch_size": (_int_range(1, 100), "guilds a rollback restores at a time"),
        "pause": (_non_negative_seconds, "seconds a rollback waits between batches"),
        "poll_interval": (_positive_seconds, "seconds between a running bot's looks for a rollback request"),
        "request_max_age": (_positive_seconds, "a rollback request older than this (s) is not started any more"),
        "track_restores_for": (
            _non_negative_seconds,
            "seconds after deploy prepare in which startup restores are recorded for the tag",
        ),
        "owner_command": (_boolean, "add the owner-only text command `sonora-deploy` (prepare/rollback/status)"),
        "handover": (_boolean, "Redis: a new process asks an older one still holding guilds to hand them over"),
        "handover_batch_size": (_int_range(1, 100), "guilds the old process hands over at a time"),
        "handover_pause": (_non_negative_seconds, "seconds between two handover batches"),
        "handover_timeout": (_positive_seconds, "seconds the old process waits for the new one to report a batch"),
        "max_failure_ratio": (_ratio, "stop the handover when more than this share of a batch fails"),
    },
    "failover": {
        "enabled": (_boolean, "move the players of a Lavalink node that stays down to the other nodes"),
        "grace_seconds": (
            _non_negative_seconds,
            "seconds a node may stay unreachable (wavelink reconnecting) before its players move",
        ),
        "probe_interval": (
            _non_negative_seconds,
            "seconds between two stats requests to each connected node (0 = never probe)",
        ),
        "concurrency": (_int_range(1, 100), "players moved at the same time"),
        "per_node_concurrency": (_int_range(1, 100), "players moved onto one node at the same time"),
        "drain_batch_size": (_int_range(1, 1000), "players a drain moves at a time"),
        "drain_pause": (_non_negative_seconds, "seconds a drain waits between batches"),
        "owner_command": (_boolean, "add the owner-only text command `sonora-nodes` (drain/undrain/status)"),
    },
    "metrics": {
        "enabled": (_boolean, "collect Prometheus metrics; needs sonora-cog[metrics] (off: nothing is collected)"),
        "port": (
            _int_range(0, 65535),
            "serve /metrics over HTTP on this port; 0 = do not serve, only register in the bot's registry",
        ),
        "address": (_text, "address the /metrics server binds to (0.0.0.0 for every interface)"),
    },
}

#: Keys that are still accepted but ignored, with why (a warning names them; the config still loads).
_DEPRECATED: dict[str, dict[str, str]] = {
    "restore": {
        "join_burst": "voice joins are paced per shard by restore.joins_per_window (joins in any 60 s, default "
        "100) and restore.joins_per_second; remove join_burst",
    },
}

_SECTIONS: dict[str, type] = {
    "storage": StorageSettings,
    "encryption": EncryptionSettings,
    "snapshots": SnapshotSettings,
    "limits": LimitSettings,
    "restore": RestoreSettings,
    "commands": CommandSettings,
    "deploy": DeploySettings,
    "failover": FailoverSettings,
    "metrics": MetricsSettings,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings. Build with :func:`load_settings`; ``Settings()`` gives the defaults.

    .. versionadded:: 0.1
    """

    storage: StorageSettings = field(default_factory=StorageSettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)
    snapshots: SnapshotSettings = field(default_factory=SnapshotSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    restore: RestoreSettings = field(default_factory=RestoreSettings)
    commands: CommandSettings = field(default_factory=CommandSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    failover: FailoverSettings = field(default_factory=FailoverSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    #: Where the settings came from (a file path, or ``"defaults"``).
    source: str = "defaults"
    #: The current encryption key and older ones, read from the environment variables named above.
    encryption_key: Secret | None = field(default=None, repr=False)
    old_encryption_keys: tuple[Secret, ...] = field(default=(), repr=False)
    redis_password: Secret | None = field(default=None, repr=False)


def _parse_env_value(raw: str, default: Any) -> Any:
    """Turn an environment string into the type of the field's default."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        return raw
    if isinstance(default, int | float):
        try:
            return int(raw) if isinstance(default, int) and raw.strip().lstrip("-").isdigit() else float(raw)
        except ValueError:
            return raw
    if isinstance(default, tuple):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fp:
            return tomllib.load(fp)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None


def _build_section(name: str, raw: Any, env: Mapping[str, str]) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a table ([{name}])")
    checks = _CHECKS[name]
    deprecated = _DEPRECATED.get(name, {})
    for key, why in deprecated.items():
        env_key = f"SONORA_{name}_{key}".upper()
        where = f"{env_key} (environment)" if env_key in env else f"{name}.{key}" if key in raw else None
        if where is not None:
            message = f"{where} is deprecated and ignored: {why}"
            warnings.warn(message, FutureWarning, stacklevel=4)
            _log.warning("%s", message)  # bots that log to a file see it there too, not only on stderr
    unknown = sorted(set(raw) - set(checks) - set(deprecated))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (known keys: {', '.join(checks)})")
    values: dict[str, Any] = {}
    defaults = cls()
    for f in fields(cls):
        env_key = f"SONORA_{name}_{f.name}".upper()
        if env_key in env:
            value = _parse_env_value(env[env_key], getattr(defaults, f.name))
            where = f"{env_key} (environment)"
        elif f.name in raw:
            value, where = raw[f.name], f"{name}.{f.name}"
        else:
            continue
        check = checks[f.name][0]
        try:
            values[f.name] = check(value)
        except ValueError as exc:
            # what is in a variable-name field, or looks like a key, may be a secret: never echo it
            if check is _env_name or _contains_a_key(repr(value)):
                raise ConfigError(
                    f"{where}: {str(exc).split(', got ')[0]} (the value is not shown: it looks like a key or password)"
                ) from None
            shown = f'"{value}"' if isinstance(value, str) else repr(value)
            raise ConfigError(f"{where}: {exc}, got {shown}") from None
    return replace(defaults, **values)


def _read_secret(env: Mapping[str, str], name: str) -> Secret | None:
    value = env.get(name, "").strip()
    return Secret(value) if value else None


def load_settings(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings: explicit ``path`` > ``$SONORA_CONFIG`` > ``./sonora.toml`` > defaults.

    Parameters
    ----------
    path:
        A TOML file to read. It must exist when given.
    env:
        The environment to read (``os.environ`` when omitted); used for the config path, the
        ``SONORA_<SECTION>_<KEY>`` overrides and the secrets.

    Raises
    ------
    ConfigError
        The file is missing (when named) or not TOML, or a key is unknown, mistyped or out of range.
        The message starts with the key: ``snapshots.auto_interval: expected a number of seconds >= 0,
        got "5m"``. Secret values never appear in it.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        chosen: Path | None = Path(path)
    elif env.get(CONFIG_ENV):
        chosen = Path(env[CONFIG_ENV])
    else:
        chosen = Path(DEFAULT_FILE) if Path(DEFAULT_FILE).is_file() else None
    if chosen is not None:
        data = _read_file(chosen)
        source = str(chosen)
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (known sections: {', '.join(_SECTIONS)})")
    sections = {name: _build_section(name, data.get(name, {}), env) for name in _SECTIONS}
    encryption: EncryptionSettings = sections["encryption"]
    storage: StorageSettings = sections["storage"]
    old_raw = env.get(encryption.old_keys_env, "")
    settings = Settings(
        **sections,
        source=source,
        encryption_key=_read_secret(env, encryption.key_env),
        old_encryption_keys=tuple(Secret(k.strip()) for k in old_raw.split(",") if k.strip()),
        redis_password=_read_secret(env, storage.redis_password_env),
    )
    if storage.lease_renew_interval >= storage.lease_ttl:
        raise ConfigError(
            f"storage.lease_renew_interval: must be below storage.lease_ttl ({storage.lease_ttl:g}), "
            f"got {storage.lease_renew_interval:g}"
        )
    snapshots: SnapshotSettings = sections["snapshots"]
    if snapshots.auto_interval_busy > snapshots.auto_interval_quiet:
        raise ConfigError(
            f"snapshots.auto_interval_busy: must not exceed snapshots.auto_interval_quiet "
            f"({snapshots.auto_interval_quiet:g}), got {snapshots.auto_interval_busy:g}"
        )
    if encryption.enabled and settings.encryption_key is None:
        raise ConfigError(
            f"encryption.enabled: encryption is on but the environment variable {encryption.key_env} "
            "is empty (generate a key with: python -m sonora_cog keygen)"
        )
    return settings


def describe_options() -> dict[str, dict[str, tuple[Any, str]]]:
    """Every option with its default and one-line description, by section (for docs and tests)."""
    out: dict[str, dict[str, tuple[Any, str]]] = {}
    for name, cls in _SECTIONS.items():
        defaults = cls()
        out[name] = {key: (getattr(defaults, key), doc) for key, (_check, doc) in _CHECKS[name].items()}
    return out
