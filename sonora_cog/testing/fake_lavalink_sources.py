"""Where each source manager's tracks live: the ``identifier`` and ``uri`` it gives a track, and the links it loads.

:meth:`FakeLavalink.add_track <sonora_cog.testing.fake_lavalink.FakeLavalink.add_track>` gives a track what its
source manager would (:func:`locate_track`), and ``/v4/loadtracks`` loads a track's link the way that source
manager recognises it (:func:`track_link`), so a link written another way still finds the track:

===============  ==============================================  ========================================
source           ``uri`` (``identifier``)                        who gives it
===============  ==============================================  ========================================
``youtube``      ``https://www.youtube.com/watch?v=<id>``        lavaplayer (youtube-source)
``soundcloud``   ``https://soundcloud.com/<user>/<slug>``        lavaplayer (its permalink)
``bandcamp``     ``https://<band>.bandcamp.com/track/<slug>``    lavaplayer (identifier: the same URL)
``twitch``       ``https://www.twitch.tv/<channel>``             lavaplayer (identifier: the same URL)
``vimeo``        ``https://vimeo.com/<numeric id>``              lavaplayer
``spotify``      ``https://open.spotify.com/track/<22-char id>``  LavaSrc (the Web API's
                                                                 ``external_urls.spotify``)
``deezer``       ``https://deezer.com/track/<numeric id>``       LavaSrc (``"https://deezer.com/track/" +
                                                                 id``)
``applemusic``   ``https://music.apple.com/us/album/<slug>/``    LavaSrc (the API's ``attributes.url``)
                 ``<album id>?i=<numeric id>``
``http``         the URL (identifier: the same)                  lavaplayer
``local``        the file path (identifier: the same)            lavaplayer
===============  ==============================================  ========================================

A source this table does not name gets a stable identifier and no ``uri``.

.. versionadded:: 0.5
"""

from __future__ import annotations

import base64
import hashlib
import re
import string
from dataclasses import dataclass

__all__ = ("TrackLink", "TrackLocation", "locate_track", "track_link")

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

# The patterns the source managers match a loaded identifier with. LavaSrc uses Matcher.find() (the link may
# carry more, a "?si=" for instance); lavaplayer matches the whole identifier.
_SPOTIFY = re.compile(
    r"(https?://)(www\.)?open\.spotify\.com/((?P<region>[a-zA-Z-]+)/)?(user/(?P<user>[a-zA-Z0-9-_]+)/)?"
    r"(?P<type>track|album|playlist|artist)/(?P<id>[a-zA-Z0-9-_]+)"
)
_DEEZER = re.compile(
    r"(https?://)?(www\.)?deezer\.com/(?P<countrycode>[a-zA-Z]{2}/)?(?P<type>track|album|playlist|artist)/"
    r"(?P<id>[0-9]+)"
)
_APPLE_MUSIC = re.compile(
    r"(https?://)?(www\.)?music\.apple\.com/((?P<countrycode>[a-zA-Z]{2})/)?(?P<type>album|playlist|artist|song)"
    r"(/[\w\-]+)?/(?P<id>[a-zA-Z\d\-.]+)(\?i=(?P<song>\d+))?"  # \w: Java's [a-zA-Z\p{L}\d]
)
_VIMEO = re.compile(r"https?://vimeo.com/(?P<id>[0-9]+)(?:\?.*|)")
_TWITCH = re.compile(r"https://(?:www\.|go\.|m\.)?twitch.tv/(?P<channel>[^/]+)")
_BANDCAMP = re.compile(r"https?://(?P<band>[^.]+)\.bandcamp\.com/track/(?P<slug>[a-zA-Z0-9-_]+)/?(?:\?.*|)")
_SOUNDCLOUD = re.compile(
    r"(?:http://|https://|)(?:www\.|)(?:m\.|)soundcloud\.com/(?P<user>[a-zA-Z0-9-_]+)/(?P<slug>[a-zA-Z0-9-_]+)/?"
    r"(?:\?.*|)"
)

#: Sources whose track is identified by its link (the identifier is the uri), besides ``http`` and ``local``.
_LINK_IDENTIFIED = frozenset({"bandcamp", "twitch"})


@dataclass(frozen=True, slots=True)
class TrackLocation:
    """A track's ``identifier`` and ``uri`` (``None`` where its source gives none)."""

    identifier: str
    uri: str | None


@dataclass(frozen=True, slots=True)
class TrackLink:
    """What a source manager reads from a link that loads one track: its source and the track's key in it."""

    source: str
    key: str


def slug(text: str) -> str:
    """``text`` as a URL path segment: lowercase words joined by ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "track"


def _digest(*parts: str) -> bytes:
    return hashlib.sha1("\0".join(parts).encode(), usedforsecurity=False).digest()


def _base62(data: bytes, length: int) -> str:
    number, chars = int.from_bytes(data, "big"), []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


def _numeric(data: bytes, digits: int) -> str:
    """A decimal id of ``digits`` digits (no leading zero), as Deezer, Apple Music and Vimeo use."""
    low = 10 ** (digits - 1)
    return str(low + int.from_bytes(data, "big") % (9 * low))


def _default_identifier(source: str, title: str, author: str) -> str:
    digest = _digest(source, title, author)
    if source == "spotify":
        return _base62(digest, 22)
    if source == "deezer":
        return _numeric(digest, 10)
    if source == "applemusic":
        return _numeric(digest, 10)
    if source == "vimeo":
        return _numeric(digest, 9)
    if source == "yandexmusic":
        return _numeric(digest, 8)
    return base64.urlsafe_b64encode(digest).decode()[:11]  # a YouTube-like id


def _default_link(source: str, title: str, author: str) -> str:
    """Where a track identified by its link lives by default (``http``, ``local``, ``bandcamp``, ``twitch``)."""
    if source == "http":
        return f"https://cdn.example.invalid/{slug(title)}.mp3"
    if source == "local":
        return f"/music/{slug(title)}.mp3"
    if source == "bandcamp":
        return f"https://{slug(author).replace('-', '')}.bandcamp.com/track/{slug(title)}"
    return f"https://www.twitch.tv/{slug(author).replace('-', '_')}"  # twitch


def _uri(source: str, identifier: str, title: str, author: str) -> str | None:
    if source == "youtube":
        return f"https://www.youtube.com/watch?v={identifier}"
    if source == "soundcloud":
        return f"https://soundcloud.com/{slug(author)}/{slug(title)}"
    if source == "spotify":
        return f"https://open.spotify.com/track/{identifier}"
    if source == "deezer":
        return f"https://deezer.com/track/{identifier}"
    if source == "applemusic":
        album = _numeric(_digest("album", title, author), 10)
        return f"https://music.apple.com/us/album/{slug(title)}/{album}?i={identifier}"
    if source == "vimeo":
        return f"https://vimeo.com/{identifier}"
    if source == "jiosaavn":  # LavaSrc's JioSaavn tracks link their song page
        return f"https://www.jiosaavn.com/song/{slug(title)}/{identifier}"
    if source == "yandexmusic":  # LavaSrc's Yandex Music tracks link album and track
        album = _numeric(_digest("album", title, author), 8)
        return f"https://music.yandex.ru/album/{album}/track/{identifier}"
    return None


def locate_track(
    source: str, title: str, author: str, identifier: str | None = None, uri: str | None = None
) -> TrackLocation:
    """The ``identifier`` and ``uri`` that ``source``'s manager gives a track; given values are kept.

    A track identified by its link (``http``, ``local``, ``bandcamp``, ``twitch``) has one string for both:
    ``identifier`` if given, else ``uri``, else a default link made from title and author. Otherwise a missing
    ``identifier`` is derived from source, title and author (stable across runs, in the source's own shape:
    22 base-62 characters for Spotify, digits for Deezer, Apple Music and Vimeo), and a missing ``uri`` is the
    source's track link for it (``None`` for a source without a known link).
    """
    if source in _LINK_IDENTIFIED or source in ("http", "local"):
        link = identifier or uri or _default_link(source, title, author)
        return TrackLocation(link, link)
    identifier = identifier or _default_identifier(source, title, author)
    return TrackLocation(identifier, uri if uri is not None else _uri(source, identifier, title, author))


def track_link(identifier: str) -> TrackLink | None:
    """The track a loaded ``identifier`` names, read as its source manager reads the link; ``None`` if it is
    not a link to one track (a search, an album, a playlist, or no known source's link)."""
    if match := _SPOTIFY.search(identifier):
        return TrackLink("spotify", match["id"]) if match["type"] == "track" else None
    if match := _DEEZER.search(identifier):
        return TrackLink("deezer", match["id"]) if match["type"] == "track" else None
    if match := _APPLE_MUSIC.search(identifier):
        if match["type"] == "song":
            return TrackLink("applemusic", match["id"])
        return TrackLink("applemusic", match["song"]) if match["type"] == "album" and match["song"] else None
    if match := _VIMEO.fullmatch(identifier):
        return TrackLink("vimeo", match["id"])
    if match := _TWITCH.fullmatch(identifier):
        return TrackLink("twitch", match["channel"].lower())
    if match := _BANDCAMP.fullmatch(identifier):
        return TrackLink("bandcamp", f"{match['band'].lower()}/{match['slug']}")
    if match := _SOUNDCLOUD.fullmatch(identifier):
        return TrackLink("soundcloud", f"{match['user'].lower()}/{match['slug'].lower()}")
    return None
