"""The AES-256-GCM keys the codec encrypts records with, and how to name them without showing them.

A key is 32 random bytes. Its *id* is the first 8 bytes (16 hex characters) of
``sha256(b"sonora-key-id:" + key)``: stored in the clear in each encrypted record's header, it tells
which key a record needs without revealing anything about the key. A :class:`Keyring` holds the
*current* key (used for every new record) and any number of *previous* keys (still accepted when
reading, so records written before a key rotation stay readable until they are re-keyed).

Key material never appears in a ``repr``, an exception message or a log line; only key ids do.

``cryptography`` is an optional dependency (``pip install 'sonora-cog[crypto]'``). A keyring can be
built and inspected without it; only encrypting or decrypting needs it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import os
import string
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError

__all__ = ("KEY_BYTES", "KEY_ID_BYTES", "Keyring", "key_id")

#: Length of an AES-256 key, in bytes.
KEY_BYTES = 32
#: Length of a key id, in bytes (shown as twice as many hex characters).
KEY_ID_BYTES = 8
_KEY_ID_DOMAIN = b"sonora-key-id:"
_HEX_DIGITS = frozenset(string.hexdigits)


def key_id(key: bytes) -> str:
    """Return the id of ``key``: 16 hex characters that name it without revealing it.

    Parameters
    ----------
    key:
        The raw key bytes.

    Returns
    -------
    str
        The first 8 bytes of ``sha256(b"sonora-key-id:" + key)``, as lowercase hex.
    """
    return hashlib.sha256(_KEY_ID_DOMAIN + key).digest()[:KEY_ID_BYTES].hex()


def load_aesgcm() -> Any:
    """Return the ``AESGCM`` class from ``cryptography``, imported on first use.

    Raises
    ------
    ConfigError
        ``cryptography`` is not installed; the message names the extra to install.
    """
    try:
        module = importlib.import_module("cryptography.hazmat.primitives.ciphers.aead")
    except ImportError:
        raise ConfigError(
            "encrypted records need the 'cryptography' package: pip install 'sonora-cog[crypto]'"
        ) from None
    return module.AESGCM


def _check_key(key: object, where: str) -> bytes:
    if isinstance(key, bytearray | memoryview):
        key = bytes(key)
    if not isinstance(key, bytes):
        hint = "; use Keyring.from_text for text keys" if isinstance(key, str) else ""
        raise ValueError(f"{where} must be bytes, got {type(key).__name__}{hint}")
    if len(key) != KEY_BYTES:
        raise ValueError(f"{where} must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def _parse_key_text(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{where} must be text, got {type(text).__name__}")
    text = text.strip()
    if len(text) == 2 * KEY_BYTES and _HEX_DIGITS.issuperset(text):
        return bytes.fromhex(text)
    try:
        # Standard and URL-safe alphabets both accepted; padding optional.
        normalised = text.translate(str.maketrans("+/", "-_")).rstrip("=")
        raw = base64.b64decode(normalised + "=" * (-len(normalised) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        # Never echo the text: it may be a real key with one typo in it.
        raise ValueError(
            f"{where} is not a valid key: expected {KEY_BYTES} bytes as URL-safe base64 "
            f"or {2 * KEY_BYTES} hex characters"
        )
    return raw


class Keyring:
    """The current encryption key plus the previous keys still accepted for reading.

    Parameters
    ----------
    current:
        The key new records are encrypted with (32 raw bytes), or ``None`` for a read-only keyring.
    previous:
        Older keys (32 raw bytes each) that records may still be encrypted with.

    Raises
    ------
    ValueError
        A key is not 32 bytes. The message says which one (``current``, ``previous[1]``), never
        its value.

    Notes
    -----
    .. versionadded:: 0.1
    """

    __slots__ = ("_ciphers", "_current_id", "_keys")

    def __init__(self, current: bytes | None, previous: Sequence[bytes] = ()) -> None:
        if isinstance(previous, bytes | bytearray | str):
            raise ValueError("previous must be a sequence of keys, not a single key")
        keys: dict[str, bytes] = {}
        self._current_id: str | None = None
        if current is not None:
            key = _check_key(current, "current key")
            self._current_id = key_id(key)
            keys[self._current_id] = key
        for index, old in enumerate(previous):
            key = _check_key(old, f"previous key [{index}]")
            keys.setdefault(key_id(key), key)
        self._keys = keys
        self._ciphers: dict[str, Any] = {}

    @classmethod
    def from_text(cls, current: str | None, previous: Sequence[str] = ()) -> Keyring:
        """Build a keyring from keys written as text (configuration files, environment variables).

        Parameters
        ----------
        current:
            The current key as URL-safe base64 (padding optional; the standard alphabet is also
            accepted) or as 64 hex characters; ``None`` for no current key.
        previous:
            Older keys, in the same forms.

        Returns
        -------
        Keyring

        Raises
        ------
        ValueError
            A key does not decode to 32 bytes. The message names its position (``current key``,
            ``previous key [2]``) and never contains the text.
        """
        if isinstance(previous, str):
            raise ValueError("previous must be a sequence of keys, not a single key")
        current_key = None if current is None else _parse_key_text(current, "current key")
        old = [_parse_key_text(text, f"previous key [{index}]") for index, text in enumerate(previous)]
        return cls(current_key, old)

    @staticmethod
    def generate_key_text() -> str:
        """Return a fresh random key as URL-safe base64 text (44 characters), ready for a config file."""
        return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")

    @property
    def current_id(self) -> str | None:
        """The id of the current key, or ``None`` when there is no current key."""
        return self._current_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key in the ring, the current one first."""
        return tuple(self._keys)

    def has(self, key_id: str) -> bool:
        """Return whether the ring holds the key with id ``key_id``."""
        return key_id in self._keys

    def cipher(self, key_id: str) -> Any:
        """Return an ``AESGCM`` for the key with id ``key_id`` (cached), or ``None`` if it is not held.

        Raises
        ------
        ConfigError
            ``cryptography`` is not installed.
        """
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            key = self._keys.get(key_id)
            if key is None:
                return None
            cipher = self._ciphers[key_id] = load_aesgcm()(key)
        return cipher

    def __repr__(self) -> str:
        previous = [kid for kid in self._keys if kid != self._current_id]
        return f"<Keyring current_id={self._current_id!r} previous_ids={previous!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("a Keyring holds secret keys and cannot be pickled")
