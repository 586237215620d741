"""Request JSON as Lavalink v4 decodes it, for :class:`~sonora_cog.testing.fake_lavalink.FakeLavalink`.

Lavalink reads a request body with kotlinx.serialization into the classes of its ``protocol`` module (``Json {
ignoreUnknownKeys = true }``). A value of the wrong JSON type fails the whole request before anything is done
(``400 Failed to read request``); unknown keys are ignored. kotlinx reads numbers more loosely than JSON does:

- an ``Int``/``Long`` field takes a JSON integer or the same digits in quotes (``"100"``), not ``2.5``,
  ``true`` or a word; it must fit the field (32 or 64 bits);
- a ``Float``/``Double`` field takes a JSON number or a number in quotes (``"1.5"``), not ``true``, ``null``
  or a word, and the value must be finite (``Float`` fields overflow past about ``3.4e38``).

The ``filters`` object (``protocol/v4/filters.kt``): ``volume`` is a ``Float``; ``equalizer`` a list of
``{band: Int (required), gain: Float}``; ``karaoke``, ``timescale``, ``tremolo``, ``vibrato``, ``distortion``,
``rotation``, ``channelMix`` and ``lowPass`` are objects of ``Float``/``Double`` fields, each with a default,
or ``null`` (no such filter); ``pluginFilters`` is an object of any JSON. No range is checked here: a timescale
speed of 0, a filter volume of 7 or a tremolo depth of 2 are accepted, as Lavalink accepts them (lavadsp only
rejects such values when the audio pipeline is built, which the fake does not do).

What Lavalink does check happens when it builds the filter chain (``FilterChain.parse`` in
``PlayerRestHandler``, after volume, pause and position are applied): ``EqualizerConfig`` puts each gain at
``array[band]`` of lavaplayer's 15 bands, so a band outside 0-14 throws
``ArrayIndexOutOfBoundsException``, answered with a 500 (:func:`equalizer_error`).

.. versionadded:: 0.5
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping
from typing import Any

__all__ = ("EQUALIZER_BANDS", "BadRequestJson", "equalizer_error", "read_filters", "read_float", "read_int")

#: lavaplayer's ``Equalizer.BAND_COUNT``.
EQUALIZER_BANDS = 15

_FLOAT, _DOUBLE = "float", "double"
#: The filters that are objects of numbers, with each field's Kotlin type (``Filters`` in filters.kt).
_OBJECT_FILTERS: dict[str, dict[str, str]] = {
    "karaoke": {"level": _FLOAT, "monoLevel": _FLOAT, "filterBand": _FLOAT, "filterWidth": _FLOAT},
    "timescale": {"speed": _DOUBLE, "pitch": _DOUBLE, "rate": _DOUBLE},
    "tremolo": {"frequency": _FLOAT, "depth": _FLOAT},
    "vibrato": {"frequency": _FLOAT, "depth": _FLOAT},
    "distortion": {
        name: _FLOAT
        for name in ("sinOffset", "sinScale", "cosOffset", "cosScale", "tanOffset", "tanScale", "offset", "scale")
    },
    "rotation": {"rotationHz": _DOUBLE},
    "channelMix": {"leftToLeft": _FLOAT, "leftToRight": _FLOAT, "rightToLeft": _FLOAT, "rightToRight": _FLOAT},
    "lowPass": {"smoothing": _FLOAT},
}
# What kotlinx's lexer takes as an integer (AbstractJsonLexer.consumeNumericLiteral) and Java's parseFloat as a
# decimal number, once the quotes are off.
_INTEGER = re.compile(r"(-?)(\d+)(?:[eE]([+-]?)(\d+))?")
_DECIMAL = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[fFdD]?\s*")


class BadRequestJson(ValueError):
    """A value Lavalink's JSON decoding rejects; ``path`` names it (``filters.equalizer[0].gain``)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"invalid value for '{path}'")
        self.path = path


def read_int(value: Any, path: str, *, bits: int = 32) -> int:
    """``value`` as kotlinx reads an ``Int`` (``bits=32``) or ``Long`` (``bits=64``) field.

    Raises
    ------
    BadRequestJson
        Not an integer in JSON or in quotes, or out of the field's range.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and (match := _INTEGER.fullmatch(value)):
        sign, digits, exp_sign, exponent = match.groups()
        number = int(digits)
        if exponent is not None:
            scale = 10 ** int(exponent)
            if exp_sign == "-":
                if number % scale:
                    raise BadRequestJson(path)  # "Can't convert ... to Long"
                number //= scale
            else:
                number *= scale
        number = -number if sign else number
    else:
        raise BadRequestJson(path)
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise BadRequestJson(path)
    return number


def read_float(value: Any, path: str, *, double: bool = False) -> float:
    """``value`` as kotlinx reads a ``Float`` field (or a ``Double`` one with ``double``).

    Raises
    ------
    BadRequestJson
        Not a number in JSON or in quotes, or not finite as the field's type.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequestJson(path)
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise BadRequestJson(path)
    try:
        number = float(value.strip().rstrip("fFdD") if isinstance(value, str) else value)
        # Rounded to 32 bits as Java's toFloat() does: past Float.MAX_VALUE it is Infinity (so not finite).
        as_read = number if double else struct.unpack("f", struct.pack("f", number))[0]
    except OverflowError:  # an int too large for a double, or a Python that refuses to pack it
        raise BadRequestJson(path) from None
    if not math.isfinite(as_read):
        raise BadRequestJson(path)
    return number


def _read_band(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequestJson(path)
    if "band" not in value:
        raise BadRequestJson(f"{path}.band")  # kotlinx: "Field 'band' is required"
    band = dict(value)
    band["band"] = read_int(value["band"], f"{path}.band")
    if "gain" in value:
        band["gain"] = _number(value["gain"], f"{path}.gain", _FLOAT)
    return band


def _number(value: Any, path: str, kind: str) -> float:
    """A number field kept as the client wrote it when it is a JSON number, converted when it is quoted."""
    number = read_float(value, path, double=kind == _DOUBLE)
    return value if isinstance(value, int | float) else number


def read_filters(value: Any, path: str = "filters") -> dict[str, Any]:
    """Check a ``filters`` object as Lavalink decodes it; returns it with quoted numbers read as numbers.

    Filters that are ``null`` are dropped (they mean no such filter); unknown keys are kept as given.

    Raises
    ------
    BadRequestJson
        A value of a type the filters object does not take.
    """
    if not isinstance(value, Mapping):
        raise BadRequestJson(path)
    filters: dict[str, Any] = {}
    for key, item in value.items():
        where = f"{path}.{key}"
        if key == "volume":
            filters[key] = _number(item, where, _FLOAT)
        elif key == "equalizer":
            if not isinstance(item, list):
                raise BadRequestJson(where)
            filters[key] = [_read_band(band, f"{where}[{i}]") for i, band in enumerate(item)]
        elif key in _OBJECT_FILTERS:
            if item is None:
                continue
            if not isinstance(item, Mapping):
                raise BadRequestJson(where)
            fields = _OBJECT_FILTERS[key]
            filters[key] = {
                name: _number(field, f"{where}.{name}", fields[name]) if name in fields else field
                for name, field in item.items()
            }
        elif key == "pluginFilters":
            if not isinstance(item, Mapping):
                raise BadRequestJson(where)
            filters[key] = dict(item)
        elif item is not None:
            filters[key] = item  # ignored by Lavalink; kept for the test to see
    return filters


def equalizer_error(filters: Mapping[str, Any]) -> str | None:
    """The message of the exception Lavalink's ``EqualizerConfig`` throws for these (decoded) filters, if any:
    ``Index 20 out of bounds for length 15`` for a band outside 0-14."""
    for band in filters.get("equalizer", ()):
        if not 0 <= band["band"] < EQUALIZER_BANDS:
            return f"Index {band['band']} out of bounds for length {EQUALIZER_BANDS}"
    return None
