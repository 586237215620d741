"""The loads autoplay makes, recognised so :class:`~sonora_cog.testing.fake_lavalink.FakeLavalink` can answer them.

Autoplay asks Lavalink for recommendations with ordinary ``/v4/loadtracks`` identifiers built from the seed
track's identifier. wavelink 3 (``Player._do_recommendation``) loads:

- for a YouTube seed, its YouTube Music mix: ``https://music.youtube.com/watch?v=<id>8&list=RD<id>``
  (wavelink appends the ``8`` to ``v``; the mix is named by ``list=RD<id>``);
- for Spotify seeds, LavaSrc's recommendations: ``sprec:seed_tracks=<id>,<id>,<id>&limit=10``.

Other clients load mixes by the same kind of URL (any YouTube watch URL whose ``list`` is ``RD<id>``), so a
test seeds recommendations by seed track (:meth:`FakeLavalink.recommend`) and never needs these URLs.

.. versionadded:: 0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

__all__ = ("RecommendationRequest", "parse_recommendation_request")

_YOUTUBE_HOSTS = frozenset({"music.youtube.com", "www.youtube.com", "youtube.com", "m.youtube.com"})
_MIX_PREFIX = "RD"  # a YouTube mix's playlist id: "RD" + the seed video's id
_SPOTIFY_RECOMMENDATIONS = "sprec:"  # LavaSrc's recommendations prefix


@dataclass(frozen=True, slots=True)
class RecommendationRequest:
    """A load that asks for recommendations.

    ``source`` is ``"youtube"`` (a mix) or ``"spotify"`` (LavaSrc's ``sprec:``); ``seeds`` are the seed
    tracks' identifiers; ``selected`` is a mix's ``v`` parameter; ``limit`` is ``sprec``'s ``limit``.
    """

    source: str
    seeds: tuple[str, ...]
    selected: str | None = None
    limit: int | None = None


def parse_recommendation_request(identifier: str) -> RecommendationRequest | None:
    """Recognise a YouTube mix URL or a ``sprec:`` query; ``None`` for any other identifier."""
    if identifier.startswith(_SPOTIFY_RECOMMENDATIONS):
        query = parse_qs(identifier[len(_SPOTIFY_RECOMMENDATIONS) :])
        seeds = tuple(seed for value in query.get("seed_tracks", ()) for seed in value.split(",") if seed)
        limit = query.get("limit", [""])[0]
        return RecommendationRequest("spotify", seeds, limit=int(limit) if limit.isdigit() else None)
    url = urlsplit(identifier)
    if url.scheme not in ("http", "https") or url.hostname not in _YOUTUBE_HOSTS or url.path != "/watch":
        return None
    query = parse_qs(url.query)
    mix = query.get("list", [""])[0]
    if not mix.startswith(_MIX_PREFIX) or len(mix) == len(_MIX_PREFIX):
        return None
    return RecommendationRequest("youtube", (mix[len(_MIX_PREFIX) :],), selected=query.get("v", [None])[0])
