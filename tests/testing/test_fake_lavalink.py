"""FakeLavalink against a raw aiohttp client, then against the real wavelink."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import wavelink

from sonora_cog.testing.fake_lavalink import FakeLavalink
from sonora_cog.testing.trackcodec import decode_probe_info, decode_track, decode_track_details, encode_track

PASSWORD = "youshallnotpass"
USER_ID = "170939974227541168"
GUILD = 817327181659111454
VOICE = {"token": "tok", "endpoint": "eu.discord.media", "sessionId": "voice-session", "channelId": "42"}
PLAYER_ROUTE = "PATCH /v4/sessions/{sessionId}/players/{guildId}"


class Client:
    """A raw Lavalink v4 client: one aiohttp session, at most one WebSocket, every message kept."""

    def __init__(self, lavalink: FakeLavalink, http: aiohttp.ClientSession) -> None:
        self.lavalink = lavalink
        self.http = http
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.messages: list[dict[str, Any]] = []
        self.session_id = ""
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, *, session_id: str | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
        sent = {"Authorization": PASSWORD, "User-Id": USER_ID, "Client-Name": "raw-test/1.0"}
        if session_id:
            sent["Session-Id"] = session_id
        self.ws = await self.http.ws_connect(f"{self.lavalink.uri}/v4/websocket", headers={**sent, **(headers or {})})
        self.messages = []
        self._reader = asyncio.create_task(self._read(self.ws))
        ready = await self.expect(lambda m: m["op"] == "ready")
        self.session_id = ready["sessionId"]
        return ready

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.messages.append(message.json())

    async def expect(
        self, predicate: Callable[[dict[str, Any]], bool], *, after: int = 0, within: float = 3.0
    ) -> dict[str, Any]:
        async def find() -> dict[str, Any] | None:
            return next((m for m in self.messages[after:] if predicate(m)), None)

        return await self.lavalink.wait_for(find, within)

    def mark(self) -> int:
        return len(self.messages)

    def event(self, event_type: str) -> Callable[[dict[str, Any]], bool]:
        return lambda m: m["op"] == "event" and m["type"] == event_type

    async def request(
        self, method: str, path: str, *, json: Any = None, auth: str | None = PASSWORD, **params: str
    ) -> tuple[int, Any]:
        headers = {} if auth is None else {"Authorization": auth}
        async with self.http.request(
            method, f"{self.lavalink.uri}{path}", json=json, params=params, headers=headers
        ) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def patch_player(self, body: dict[str, Any], guild: int = GUILD, **params: str) -> dict[str, Any]:
        status, data = await self.request(
            "PATCH", f"/v4/sessions/{self.session_id}/players/{guild}", json=body, **params
        )
        assert status == 200, data
        return data

    async def load(self, identifier: str) -> dict[str, Any]:
        status, data = await self.request("GET", "/v4/loadtracks", identifier=identifier)
        assert status == 200, data
        result: dict[str, Any] = data
        return result

    async def get_player(self, guild: int = GUILD) -> dict[str, Any]:
        status, data = await self.request("GET", f"/v4/sessions/{self.session_id}/players/{guild}")
        assert status == 200, data
        return data

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader


@pytest.fixture
async def lavalink() -> AsyncIterator[FakeLavalink]:
    async with FakeLavalink(player_update_interval=0.05) as server:
        server.seed_demo_catalogue()
        yield server


@pytest.fixture
async def client(lavalink: FakeLavalink) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http:
        raw = Client(lavalink, http)
        yield raw
        await raw.close()


async def play(client: Client, lavalink: FakeLavalink, length_ms: int = 600_000, **body: Any) -> dict[str, Any]:
    track = lavalink.add_track("Test Song", "Tester", length_ms, identifier=f"t{length_ms}")
    await client.patch_player({"voice": VOICE, "track": {"encoded": track["encoded"]}, **body})
    return track


# -- handshake and session ------------------------------------------------------------------------------


async def test_websocket_refuses_a_wrong_password_and_a_missing_user_id(client: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
        await client.connect(headers={"Authorization": "nope"})
    assert wrong.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as no_user:
        await client.connect(headers={"User-Id": ""})
    assert no_user.value.status == 400


async def test_rest_refuses_missing_and_wrong_authorization(client: Client) -> None:
    assert (await client.request("GET", "/v4/info", auth=None))[0] == 401
    assert (await client.request("GET", "/v4/info", auth="nope"))[0] == 403
    assert (await client.request("GET", "/v4/info"))[0] == 200


async def test_ready_gives_a_session_id_then_stats(client: Client, lavalink: FakeLavalink) -> None:
    ready = await client.connect()
    assert ready == {"op": "ready", "resumed": False, "sessionId": client.session_id}
    assert re.fullmatch(r"[a-z0-9]{16}", client.session_id)
    assert client.ws is not None and client.ws._response.headers["Session-Resumed"] == "false"
    stats = await client.expect(lambda m: m["op"] == "stats")
    assert set(stats) == {"op", "players", "playingPlayers", "uptime", "memory", "cpu", "frameStats"}
    assert stats["frameStats"] is None  # no players yet
    assert [s.session_id for s in lavalink.sessions] == [client.session_id]
    assert lavalink.sessions[0].client_name == "raw-test/1.0"
    assert lavalink.connected_clients == 1


async def test_info_version_and_stats(client: Client, lavalink: FakeLavalink) -> None:
    status, info = await client.request("GET", "/v4/info")
    assert status == 200
    assert info["version"]["major"] == 4 and "youtube" in info["sourceManagers"] and "timescale" in info["filters"]
    status, version = await client.request("GET", "/version")
    assert (status, version) == (200, info["version"]["semver"])
    await client.connect()
    await play(client, lavalink)
    status, stats = await client.request("GET", "/v4/stats")
    assert (stats["players"], stats["playingPlayers"], stats["frameStats"]) == (1, 1, None)


# -- track loading and decoding -------------------------------------------------------------------------


async def test_loadtracks_result_kinds(client: Client, lavalink: FakeLavalink) -> None:
    track = lavalink.add_track("Paper Planes", "M.I.A.", 204_000, identifier="ewRjZoRtu0Y")
    sc = lavalink.add_track("Paper Trail", "Someone", 100_000, source="soundcloud")
    lavalink.add_playlist("Mix", ["ewRjZoRtu0Y", sc], "https://www.youtube.com/playlist?list=PLmix", 1)
    lavalink.fail_load("https://www.youtube.com/watch?v=private", "This video is private.")

    load = client.load

    assert await load("ewRjZoRtu0Y") == {"loadType": "track", "data": track}
    assert await load(track["info"]["uri"]) == {"loadType": "track", "data": track}
    search = await load("ytsearch:paper m.i.a")
    assert search["loadType"] == "search" and search["data"] == [track]  # case-insensitive, author too
    assert [t["info"]["title"] for t in (await load("scsearch:PAPER"))["data"]] == ["Paper Trail"]
    playlist = await load("https://www.youtube.com/playlist?list=PLmix")
    assert playlist["loadType"] == "playlist"
    assert playlist["data"]["info"] == {"name": "Mix", "selectedTrack": 1}
    assert [t["info"]["identifier"] for t in playlist["data"]["tracks"]] == ["ewRjZoRtu0Y", sc["info"]["identifier"]]
    assert await load("ytsearch:zzzz no such song") == {"loadType": "empty", "data": {}}
    assert await load("nothing-here") == {"loadType": "empty", "data": {}}
    error = await load("https://www.youtube.com/watch?v=private")
    assert error["loadType"] == "error"
    assert error["data"]["message"] == "This video is private." and error["data"]["severity"] == "common"
    assert set(error["data"]) == {"message", "severity", "cause"}
    assert decode_track(track["encoded"]) == track["info"]


async def test_decode_endpoints(client: Client, lavalink: FakeLavalink) -> None:
    track = lavalink.add_track("Song", "Band", 1000, identifier="abc")
    status, decoded = await client.request("GET", "/v4/decodetrack", encodedTrack=track["encoded"])
    assert (status, decoded) == (200, track)
    status, decoded = await client.request("POST", "/v4/decodetracks", json=[track["encoded"], track["encoded"]])
    assert (status, decoded) == (200, [track, track])
    status, error = await client.request("POST", "/v4/decodetracks", json=[])
    assert (status, error["message"]) == (400, "No tracks to decode provided")
    status, error = await client.request("GET", "/v4/decodetrack")
    assert (status, error["message"]) == (400, "No track to decode provided")
    status, error = await client.request("GET", "/v4/decodetrack", encodedTrack="garbage!")
    assert status == 500 and error["path"] == "/v4/decodetrack"


async def test_recommendations_answer_the_loads_autoplay_makes(client: Client, lavalink: FakeLavalink) -> None:
    seed = lavalink.add_track("Seed", "Artist", 200_000, identifier="seedSEED123")
    first = lavalink.add_track("First", "Artist", 200_000, identifier="first000001")
    second = lavalink.add_track("Second", "Artist", 200_000, identifier="second00002")
    lavalink.recommend(seed, [first, "second00002"])

    load = client.load

    # wavelink 3 (Player._do_recommendation) appends "8" to v; the mix is named by list=RD<seed>.
    mix = await load("https://music.youtube.com/watch?v=seedSEED1238&list=RDseedSEED123")
    assert mix == {
        "loadType": "playlist",
        "data": {"info": {"name": "YouTube mix", "selectedTrack": -1}, "pluginInfo": {}, "tracks": [first, second]},
    }
    other_client = await load("https://www.youtube.com/watch?v=second00002&list=RDseedSEED123")
    assert other_client["data"]["info"]["selectedTrack"] == 1
    assert await load("https://music.youtube.com/watch?v=x&list=RDunknown0001") == {"loadType": "empty", "data": {}}
    # An exact playlist seeded the old way still wins.
    lavalink.add_playlist("By hand", [seed], "https://music.youtube.com/watch?v=seedSEED1238&list=RDseedSEED123")
    by_hand = await load("https://music.youtube.com/watch?v=seedSEED1238&list=RDseedSEED123")
    assert by_hand["data"]["info"]["name"] == "By hand"

    # Spotify seeds: LavaSrc's sprec: (only with a spotify source manager, as with the plugin).
    assert await load("sprec:seed_tracks=sp1&limit=10") == {"loadType": "empty", "data": {}}
    sp1 = lavalink.add_track("Sp One", "A", 1000, identifier="sp1", source="spotify")
    sp2 = lavalink.add_track("Sp Two", "B", 1000, identifier="sp2", source="spotify")
    lavalink.recommend("sp1", [first, second])
    lavalink.recommend(sp2, [second, sp1])
    recommended = await load("sprec:seed_tracks=sp1,sp2&limit=2")
    assert recommended["loadType"] == "playlist"
    assert [t["info"]["identifier"] for t in recommended["data"]["tracks"]] == ["first000001", "second00002"]
    recommended = await load("sprec:seed_tracks=sp2,sp1&limit=10")
    assert [t["info"]["identifier"] for t in recommended["data"]["tracks"]] == ["second00002", "sp1", "first000001"]


# An http track as Lavalink v3 encoded it (probe "mp3" after the source name; see test_trackcodec.py), and the
# same track without the probe, as the fake wrongly encoded http tracks before.
LAVALINK_HTTP_V2 = (
    "QAAAiwIAC0RlYXRoIG9mIE1lAApTQUlOVCBQSE5YAAAAAAAAdVgAKGh0dHBzOi8vd3d3Lm1ib3hkcml2ZS5jb20vc3RhcnRtdXNpYy5tcDMA"
    "AQAoaHR0cHM6Ly93d3cubWJveGRyaXZlLmNvbS9zdGFydG11c2ljLm1wMwAEaHR0cAADbXAzAAAAAAAAAAA="
)


async def test_http_and_local_tracks_are_their_location_and_carry_a_probe(
    client: Client, lavalink: FakeLavalink
) -> None:
    url = "https://cdn.example.invalid/jingles/intro.ogg"
    http = lavalink.add_track("Intro", "Jingles", 4_000, uri=url, source="http")
    local = lavalink.add_track("Outro", "Jingles", 6_000, source="local")
    assert http["info"]["identifier"] == http["info"]["uri"] == url  # lavaplayer: identifier = the URL
    assert local["info"]["identifier"] == local["info"]["uri"] == "/music/outro.mp3"
    assert decode_probe_info(decode_track_details(http["encoded"])[2]) == ("ogg", None)
    assert decode_probe_info(decode_track_details(local["encoded"])[2]) == ("mp3", None)
    status, loaded = await client.request("GET", "/v4/loadtracks", identifier=url)
    assert (status, loaded) == (200, {"loadType": "track", "data": http})


# What each source manager puts in a track's info, as its source shows (identifier, uri):
# LavaSrc SpotifySourceManager.parseTrack: the Web API's id and external_urls.spotify; DeezerAudioSourceManager:
# id and "https://deezer.com/track/" + id; AppleMusicSourceManager: the API's id and attributes.url
# (https://music.apple.com/<cc>/album/<album>/<album id>?i=<song id>); lavaplayer VimeoAudioSourceManager:
# the video id and "https://vimeo.com/" + id; BandcampAudioSourceManager and TwitchStreamAudioSourceManager:
# the track page / channel URL as both; LavaSrc JioSaavn: the song's perma_url
# (https://www.jiosaavn.com/song/<slug>/<id>); LavaSrc YandexMusic: the track id and
# https://music.yandex.ru/album/<album id>/track/<track id>.
SOURCE_LINKS = {
    "jiosaavn": (r"[A-Za-z0-9_-]{11}", r"https://www\.jiosaavn\.com/song/[a-z0-9-]+/{id}"),
    "yandexmusic": (r"[1-9][0-9]+", r"https://music\.yandex\.ru/album/[0-9]+/track/{id}"),
    "spotify": (r"[0-9A-Za-z]{22}", "https://open.spotify.com/track/{id}"),
    "deezer": (r"[1-9][0-9]+", "https://deezer.com/track/{id}"),
    "applemusic": (r"[1-9][0-9]+", r"https://music\.apple\.com/us/album/[a-z0-9-]+/[0-9]+\?i={id}"),
    "vimeo": (r"[1-9][0-9]+", "https://vimeo.com/{id}"),
    "bandcamp": (r"https://[a-z0-9]+\.bandcamp\.com/track/[a-z0-9-]+", "{id}"),
    "twitch": (r"https://www\.twitch\.tv/[a-z0-9_]+", "{id}"),
    "soundcloud": (r".+", "https://soundcloud.com/[a-z0-9-]+/[a-z0-9-]+"),
}


@pytest.mark.parametrize("source", sorted(SOURCE_LINKS))
async def test_each_source_gives_its_managers_uri_which_loads_the_track(
    client: Client, lavalink: FakeLavalink, source: str
) -> None:
    track = lavalink.add_track("Midnight Drive", "Neon Arcade", 214_000, source=source)
    identifier, uri = track["info"]["identifier"], track["info"]["uri"]
    id_pattern, uri_pattern = SOURCE_LINKS[source]
    assert re.fullmatch(id_pattern, identifier), identifier
    assert re.fullmatch(uri_pattern.replace("{id}", re.escape(identifier)), uri), uri
    assert await client.load(uri) == {"loadType": "track", "data": track}
    assert decode_track(track["encoded"])["uri"] == uri


async def test_other_links_the_source_manager_accepts_load_the_same_track(
    client: Client, lavalink: FakeLavalink
) -> None:
    spotify = lavalink.add_track("Song", "Band", 1000, identifier="4uLU6hMCjMI75M1A2tKUQC", source="spotify")
    deezer = lavalink.add_track("Song", "Band", 1000, identifier="3135556", source="deezer")
    apple = lavalink.add_track("Song", "Band", 1000, identifier="1440806041", source="applemusic")
    vimeo = lavalink.add_track("Song", "Band", 1000, identifier="76979871", source="vimeo")
    twitch = lavalink.add_track("Live", "somechannel", 2**63 - 1, is_stream=True, source="twitch")
    links = {
        # LavaSrc matches with find(): a region segment and a share suffix are fine.
        "https://open.spotify.com/intl-de/track/4uLU6hMCjMI75M1A2tKUQC?si=abc123": spotify,
        "https://www.deezer.com/fr/track/3135556": deezer,
        "https://music.apple.com/gb/song/song/1440806041": apple,
        "https://music.apple.com/album/some-album/1440806000?i=1440806041": apple,
        "https://vimeo.com/76979871?share=copy": vimeo,
        "https://m.twitch.tv/SomeChannel": twitch,
    }
    for link, track in links.items():
        assert await client.load(link) == {"loadType": "track", "data": track}, link
    # A link to something else, or to a track the catalogue does not have, finds nothing.
    for link in (
        "https://open.spotify.com/album/4uLU6hMCjMI75M1A2tKUQC",
        "https://open.spotify.com/track/nope",
        "https://music.apple.com/us/album/some-album/1440806000",
    ):
        assert await client.load(link) == {"loadType": "empty", "data": {}}, link
    # Without the source manager (the plugin absent), nobody reads the link.
    lavalink.source_managers.remove("deezer")
    assert await client.load("https://www.deezer.com/fr/track/3135556") == {"loadType": "empty", "data": {}}


async def test_decoding_http_tracks_reads_the_probe_as_lavaplayer_does(client: Client, lavalink: FakeLavalink) -> None:
    status, decoded = await client.request("GET", "/v4/decodetrack", encodedTrack=LAVALINK_HTTP_V2)
    assert status == 200 and decoded["info"]["sourceName"] == "http"
    assert decoded["info"]["identifier"] == "https://www.mboxdrive.com/startmusic.mp3"
    # Without the probe lavaplayer's decodeTrackFactory reads the position as the probe and finds no track.
    info = decode_track(LAVALINK_HTTP_V2)
    for details in (b"", b"\x00\x04nope"):
        status, error = await client.request("GET", "/v4/decodetrack", encodedTrack=encode_track(info, details=details))
        assert status == 500, error
    await client.connect()
    status, error = await client.request(
        "PATCH",
        f"/v4/sessions/{client.session_id}/players/{GUILD}",
        json={"track": {"encoded": encode_track(info, details=b"")}},
    )
    state = lavalink.player(GUILD)
    assert status == 500 and (state is None or state.track is None), error
    await client.patch_player({"voice": VOICE, "track": {"encoded": LAVALINK_HTTP_V2}})
    playing = await client.get_player()
    assert decode_track_details(playing["track"]["encoded"])[2] == decode_track_details(LAVALINK_HTTP_V2)[2]


# -- playback -------------------------------------------------------------------------------------------


async def test_patch_player_starts_a_track_and_player_updates_advance(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    mark = client.mark()
    track = await play(client, lavalink)
    start = await client.expect(client.event("TrackStartEvent"), after=mark)
    assert start["guildId"] == str(GUILD) and start["track"]["info"]["identifier"] == track["info"]["identifier"]
    assert set(start["track"]) == {"encoded", "info", "pluginInfo", "userData"}
    first = await client.expect(lambda m: m["op"] == "playerUpdate", after=mark)
    later = await client.expect(
        lambda m: m["op"] == "playerUpdate" and m["state"]["position"] >= first["state"]["position"] + 40, after=mark
    )
    assert set(later["state"]) == {"time", "position", "connected", "ping"}
    assert later["state"]["connected"] is True and later["state"]["time"] > first["state"]["time"]
    player = await client.get_player()
    assert set(player) == {"guildId", "track", "volume", "paused", "state", "voice", "filters"}
    assert player["guildId"] == str(GUILD) and player["volume"] == 100 and player["paused"] is False
    assert player["voice"] == VOICE
    # Lavalink re-encodes the playing track with its current position.
    assert decode_track(player["track"]["encoded"])["position"] == player["track"]["info"]["position"] > 0
    assert lavalink.request_counts[PLAYER_ROUTE] == 1


async def test_without_voice_the_position_does_not_move(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    track = lavalink.add_track("Song", "Band", 600_000)
    player = await client.patch_player({"track": {"encoded": track["encoded"]}})
    assert player["state"]["connected"] is False and player["state"]["ping"] == -1
    await asyncio.sleep(0.1)
    assert (await client.get_player())["state"]["position"] == 0


async def test_pause_freezes_and_resume_continues(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await play(client, lavalink)
    await asyncio.sleep(0.05)
    frozen = (await client.patch_player({"paused": True}))["state"]["position"]
    await asyncio.sleep(0.1)
    assert (await client.get_player())["state"]["position"] == frozen
    assert lavalink.player(GUILD).paused is True
    await client.patch_player({"paused": False})
    await lavalink.wait_for(lambda: lavalink.player(GUILD).position > frozen + 30)


async def test_seek_moves_the_position_and_sends_an_update(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await play(client, lavalink)
    sent_before = len(lavalink.messages)
    player = await client.patch_player({"position": 100_000})
    assert 100_000 <= player["state"]["position"] < 100_500
    # Lavalink sends a playerUpdate as part of the seek, not at the next interval.
    immediate = [payload for _sid, payload in lavalink.messages[sent_before:] if payload["op"] == "playerUpdate"]
    assert immediate and immediate[0]["state"]["position"] >= 100_000
    await client.expect(lambda m: m["op"] == "playerUpdate" and m["state"]["position"] >= 100_000)


async def test_end_time_finishes_the_track(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    mark = client.mark()
    track = await play(client, lavalink, position=1000, endTime=1150)
    end = await client.expect(client.event("TrackEndEvent"), after=mark)
    assert end["reason"] == "finished" and end["track"]["info"]["identifier"] == track["info"]["identifier"]
    assert end["track"]["info"]["position"] == 1150
    assert (await client.get_player())["track"] is None


async def test_track_length_finishes_the_track(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    mark = client.mark()
    await play(client, lavalink, length_ms=150)
    end = await client.expect(client.event("TrackEndEvent"), after=mark)
    assert end["reason"] == "finished"
    assert lavalink.player(GUILD).track is None


async def test_a_stream_never_ends_and_ignores_seeks(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    stream = lavalink.add_track("Radio", "DJ", 2**63 - 1, is_stream=True)
    await client.patch_player({"voice": VOICE, "track": {"encoded": stream["encoded"]}, "endTime": None})
    await client.patch_player({"position": 5_000_000})
    await asyncio.sleep(0.2)
    state = lavalink.player(GUILD)
    assert state.track is not None and state.track["info"]["isStream"] is True
    assert 100 <= state.position < 5_000_000
    assert not client.lavalink.events("TrackEndEvent")


async def test_replace_sends_replaced_then_start_and_no_replace_keeps_the_track(
    client: Client, lavalink: FakeLavalink
) -> None:
    await client.connect()
    first = await play(client, lavalink)
    second = lavalink.add_track("Other", "Band", 300_000)
    mark = client.mark()
    await client.patch_player({"track": {"encoded": second["encoded"]}}, noReplace="true")
    assert lavalink.player(GUILD).track["info"]["title"] == first["info"]["title"]
    await client.patch_player({"track": {"encoded": second["encoded"]}}, noReplace="False")
    end = await client.expect(client.event("TrackEndEvent"), after=mark)
    start = await client.expect(lambda m: client.event("TrackStartEvent")(m) and m["track"]["info"]["title"] == "Other")
    assert (end["reason"], end["track"]["info"]["title"]) == ("replaced", first["info"]["title"])
    assert client.messages.index(end) < client.messages.index(start)
    assert start["track"]["info"]["title"] == "Other"


async def test_stop_and_destroy_send_stopped(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await play(client, lavalink)
    mark = client.mark()
    player = await client.patch_player({"track": {"encoded": None}})
    assert player["track"] is None
    assert (await client.expect(client.event("TrackEndEvent"), after=mark))["reason"] == "stopped"
    await play(client, lavalink)
    mark = client.mark()
    status, _ = await client.request("DELETE", f"/v4/sessions/{client.session_id}/players/{GUILD}")
    assert status == 204
    assert (await client.expect(client.event("TrackEndEvent"), after=mark))["reason"] == "stopped"
    status, error = await client.request("GET", f"/v4/sessions/{client.session_id}/players/{GUILD}")
    assert (status, error["message"]) == (404, "Player not found")


async def test_timescale_scales_track_time(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await play(client, lavalink, filters={"timescale": {"speed": 2.0, "pitch": 1.0, "rate": 1.5}})
    assert lavalink.player(GUILD).filters == {"timescale": {"speed": 2.0, "pitch": 1.0, "rate": 1.5}}
    await client.patch_player({"paused": True})
    before = lavalink.player(GUILD).position
    outer_start = time.monotonic()
    await client.patch_player({"paused": False})
    inner_start = time.monotonic()
    await asyncio.sleep(0.2)
    inner = time.monotonic() - inner_start
    await client.patch_player({"paused": True})
    outer = time.monotonic() - outer_start
    advanced = lavalink.player(GUILD).position - before
    # Track time ran at speed * rate = 3x real time while unpaused.
    assert 3 * inner * 1000 - 5 <= advanced <= 3 * outer * 1000 + 5


async def test_user_data_travels_with_the_track(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    track = lavalink.add_track("Song", "Band", 600_000)
    mark = client.mark()
    await client.patch_player({"voice": VOICE, "track": {"encoded": track["encoded"], "userData": {"req": "1"}}})
    assert (await client.expect(client.event("TrackStartEvent"), after=mark))["track"]["userData"] == {"req": "1"}
    player = await client.patch_player({"track": {"userData": {"req": "2"}}})
    assert player["track"]["userData"] == {"req": "2"}


async def test_play_by_identifier(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    track = lavalink.add_track("Song", "Band", 600_000, identifier="byid")
    player = await client.patch_player({"track": {"identifier": "byid"}})
    assert player["track"]["info"]["identifier"] == track["info"]["identifier"]
    status, error = await client.request(
        "PATCH", f"/v4/sessions/{client.session_id}/players/{GUILD}", json={"track": {"identifier": "ytsearch:song"}}
    )
    assert (status, error["message"]) == (400, "Cannot play a playlist or search result")


# -- resuming, restarts, blips -------------------------------------------------------------------------


async def test_one_voice_connection_per_user_and_guild(lavalink: FakeLavalink) -> None:
    # Discord keeps one voice connection per user per guild: a second process of the same bot joining
    # the guild displaces the first one's connection (its Lavalink player gets WebSocketClosedEvent 4006
    # and stops); another bot user in the same guild is not affected.
    async with aiohttp.ClientSession() as http:
        first, second, other_bot = Client(lavalink, http), Client(lavalink, http), Client(lavalink, http)
        await first.connect()
        await second.connect()
        await other_bot.connect(headers={"User-Id": "999"})
        try:
            await play(first, lavalink)
            await play(other_bot, lavalink)
            mark = first.mark()
            await play(second, lavalink)
            closed = await first.expect(first.event("WebSocketClosedEvent"), after=mark)
            assert (closed["guildId"], closed["code"]) == (str(GUILD), 4006)
            by_session = {p.session_id: p for p in lavalink.players()}
            assert by_session[first.session_id].connected is False
            assert by_session[second.session_id].connected is True
            assert by_session[other_bot.session_id].connected is True
        finally:
            for client in (first, second, other_bot):
                await client.close()


async def test_resume_within_timeout_keeps_players_and_replays_events(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    status, body = await client.request(
        "PATCH", f"/v4/sessions/{client.session_id}", json={"resuming": True, "timeout": 5}
    )
    assert (status, body) == (200, {"resuming": True, "timeout": 5})
    await play(client, lavalink, length_ms=100)
    old = client.session_id
    await client.close()
    await lavalink.wait_for(lambda: lavalink.connected_clients == 0)
    status, error = await client.request("GET", f"/v4/sessions/{old}/players")
    assert (status, error["message"]) == (404, "Session not found")  # a paused session is not reachable
    await lavalink.wait_for(lambda: lavalink.events("TrackEndEvent"))  # the track ended while away
    ready = await client.connect(session_id=old)
    assert ready == {"op": "ready", "resumed": True, "sessionId": old}
    assert client.ws is not None and client.ws._response.headers["Session-Resumed"] == "true"
    end = await client.expect(client.event("TrackEndEvent"))  # replayed from the queue
    assert end["reason"] == "finished"
    assert [p.guild_id for p in lavalink.players(old)] == [str(GUILD)]


async def test_resume_after_timeout_gets_a_fresh_session(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await client.request("PATCH", f"/v4/sessions/{client.session_id}", json={"resuming": True, "timeout": 0})
    await play(client, lavalink)
    old = client.session_id
    await client.close()
    await lavalink.wait_for(lambda: not lavalink.sessions)
    ready = await client.connect(session_id=old)
    assert ready["resumed"] is False and ready["sessionId"] != old
    assert lavalink.players() == []


async def test_without_resuming_a_disconnect_destroys_the_session(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await play(client, lavalink)
    await client.close()
    await lavalink.wait_for(lambda: not lavalink.sessions)
    assert lavalink.player(GUILD) is None


async def test_restart_loses_everything_on_the_same_port(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await client.request("PATCH", f"/v4/sessions/{client.session_id}", json={"resuming": True, "timeout": 60})
    await play(client, lavalink)
    port, old = lavalink.port, client.session_id
    await lavalink.restart()
    assert lavalink.port == port and lavalink.players() == [] and lavalink.sessions == []
    assert client._reader is not None
    await asyncio.wait_for(client._reader, 2)  # the client saw its socket die
    ready = await client.connect(session_id=old)
    assert ready["resumed"] is False and ready["sessionId"] != old


async def test_drop_connections_closes_with_1001_and_keeps_resumable_sessions(
    client: Client, lavalink: FakeLavalink
) -> None:
    await client.connect()
    await client.request("PATCH", f"/v4/sessions/{client.session_id}", json={"resuming": True})
    await play(client, lavalink)
    old = client.session_id
    await lavalink.drop_connections()
    assert client.ws is not None and client._reader is not None
    await asyncio.wait_for(client._reader, 2)
    assert client.ws.close_code == 1001
    assert lavalink.connected_clients == 0 and lavalink.player(GUILD) is not None
    assert (await client.connect(session_id=old))["resumed"] is True
    assert lavalink.player(GUILD).track is not None


# -- voice and track trouble ----------------------------------------------------------------------------


async def test_close_voice_sends_websocket_closed_and_disconnects(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await play(client, lavalink)
    mark = client.mark()
    await lavalink.close_voice(GUILD)
    closed = await client.expect(client.event("WebSocketClosedEvent"), after=mark)
    assert closed == {
        "op": "event",
        "type": "WebSocketClosedEvent",
        "guildId": str(GUILD),
        "code": 4006,
        "reason": "Your session is no longer valid.",
        "byRemote": True,
    }
    update = await client.expect(lambda m: m["op"] == "playerUpdate", after=client.messages.index(closed))
    assert update["state"]["connected"] is False
    frozen = lavalink.player(GUILD).position
    await asyncio.sleep(0.1)
    assert lavalink.player(GUILD).position == frozen
    player = await client.patch_player({"voice": VOICE})  # same voice state: Lavalink reconnects
    assert player["state"]["connected"] is True


async def test_track_exception_and_stuck_events(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await play(client, lavalink)
    await asyncio.sleep(0.05)
    mark = client.mark()
    await lavalink.send_track_stuck(GUILD, threshold_ms=2000)
    stuck = await client.expect(client.event("TrackStuckEvent"), after=mark)
    assert stuck["thresholdMs"] == 2000 and stuck["track"]["info"]["title"] == "Test Song"
    await lavalink.send_track_exception(GUILD, message="boom", severity="fault", cause="java.io.IOException")
    exc = await client.expect(client.event("TrackExceptionEvent"), after=mark)
    assert exc["exception"]["message"] == "boom" and exc["exception"]["severity"] == "fault"
    assert (await client.expect(client.event("TrackEndEvent"), after=mark))["reason"] == "finished"


# -- errors and bookkeeping -----------------------------------------------------------------------------


async def test_error_responses_have_lavalinks_shape(client: Client, lavalink: FakeLavalink) -> None:
    status, error = await client.request("GET", "/v4/sessions/nope/players/1")
    assert status == 404
    assert set(error) == {"timestamp", "status", "error", "message", "path"}
    assert (error["status"], error["error"], error["message"]) == (404, "Not Found", "Session not found")
    assert error["path"] == "/v4/sessions/nope/players/1"
    status, error = await client.request("GET", "/v4/sessions/nope/players/1", trace="true")
    assert "trace" in error
    await client.connect()
    path = f"/v4/sessions/{client.session_id}/players"
    cases = [
        (f"{path}/{GUILD}", {"voice": {"token": "t", "endpoint": "", "sessionId": "s"}}, "Partial Lavalink voice"),
        (f"{path}/{GUILD}", {"endTime": 0}, "End time must be greater than 0"),
        (f"{path}/{GUILD}", {"track": {"encoded": "x", "identifier": "y"}}, "Cannot specify both"),
        (f"{path}/{GUILD}", {"volume": "loud"}, "Failed to read request"),
        (f"{path}/not-a-number", {}, "required type 'long'"),
    ]
    for url, body, message in cases:
        status, error = await client.request("PATCH", url, json=body)
        assert status == 400 and message in error["message"], (body, error)
    status, error = await client.request("GET", "/v4/nope")
    assert (status, error["status"]) == (404, 404)
    status, error = await client.request("GET", "/v4/loadtracks")
    assert status == 400


# Lavalink decodes the filters object with kotlinx.serialization into protocol/v4/filters.kt: volume: Float,
# equalizer: List<Band(band: Int, gain: Float)>, the other filters nullable objects of Float/Double fields,
# pluginFilters: an object. A value of another JSON type fails the request (400) before anything is applied.
WRONG_FILTER_TYPES = [
    ({"equalizer": [{"band": 0, "gain": [0, 0.2]}]}, "filters.equalizer[0].gain"),
    ({"equalizer": [{"band": 2.5, "gain": 0.2}]}, "filters.equalizer[0].band"),
    ({"equalizer": [{"gain": 0.2}]}, "filters.equalizer[0].band"),  # band has no default
    ({"equalizer": {"band": 0, "gain": 0.2}}, "filters.equalizer"),
    ({"equalizer": None}, "filters.equalizer"),
    ({"timescale": {"speed": "fast"}}, "filters.timescale.speed"),
    ({"timescale": {"pitch": True}}, "filters.timescale.pitch"),
    ({"karaoke": [1.0]}, "filters.karaoke"),
    ({"volume": None}, "filters.volume"),
    ({"volume": "loud"}, "filters.volume"),
    ({"volume": 1e39}, "filters.volume"),  # past Float.MAX_VALUE: Infinity, which kotlinx refuses
    ({"rotation": {"rotationHz": {}}}, "filters.rotation.rotationHz"),
    ({"pluginFilters": None}, "filters.pluginFilters"),
]


@pytest.mark.parametrize(("filters", "where"), WRONG_FILTER_TYPES)
async def test_filters_of_a_wrong_json_type_are_refused_before_anything_is_done(
    client: Client, lavalink: FakeLavalink, filters: dict[str, Any], where: str
) -> None:
    await client.connect()
    await play(client, lavalink, volume=100, filters={"karaoke": {"level": 0.5}})
    status, error = await client.request(
        "PATCH", f"/v4/sessions/{client.session_id}/players/{GUILD}", json={"volume": 50, "filters": filters}
    )
    assert status == 400, error
    assert set(error) == {"timestamp", "status", "error", "message", "path"}
    assert (error["status"], error["error"]) == (400, "Bad Request")
    assert error["message"].startswith("Failed to read request") and where in error["message"]
    assert error["path"] == f"/v4/sessions/{client.session_id}/players/{GUILD}"
    state = lavalink.player(GUILD)
    assert state is not None and state.volume == 100 and state.filters == {"karaoke": {"level": 0.5}}


async def test_filter_values_lavalink_takes_without_a_range_check(client: Client, lavalink: FakeLavalink) -> None:
    """No range is checked when Lavalink reads filters (lavadsp refuses a speed <= 0 or a volume > 5 only when
    it builds the audio pipeline), quoted numbers are numbers to kotlinx, unknown keys are ignored and a
    null filter is no filter."""
    await client.connect()
    await play(client, lavalink)
    accepted = {
        "volume": 7.0,
        "timescale": {"speed": 0, "pitch": -1.0, "rate": "1.5"},
        "tremolo": {"frequency": 2.0, "depth": 2.0},
        "equalizer": [{"band": "14", "gain": 0.25}],
        "karaoke": None,
        "echo": {"delay": 1},
    }
    player = await client.patch_player({"filters": accepted})
    assert player["filters"]["timescale"] == {"speed": 0, "pitch": -1.0, "rate": 1.5}
    assert player["filters"]["equalizer"] == [{"band": 14, "gain": 0.25}]
    assert player["filters"]["volume"] == 7.0 and "karaoke" not in player["filters"]


async def test_an_equalizer_band_outside_0_to_14_fails_as_lavaplayers_array_index(
    client: Client, lavalink: FakeLavalink
) -> None:
    """Lavalink's EqualizerConfig stores each gain at array[band] of lavaplayer's Equalizer.BAND_COUNT (15)
    bands when PlayerRestHandler builds the filter chain: ArrayIndexOutOfBoundsException, a 500, after the
    volume, pause and position of the same request were applied."""
    await client.connect()
    await play(client, lavalink, volume=100, filters={"karaoke": {"level": 0.5}})
    url = f"/v4/sessions/{client.session_id}/players/{GUILD}"
    for band in (15, 20, -1):
        status, error = await client.request(
            "PATCH", url, json={"volume": 50 + band, "filters": {"equalizer": [{"band": band, "gain": 0.2}]}}
        )
        assert status == 500, error
        assert set(error) == {"timestamp", "status", "error", "message", "path"}
        assert error["error"] == "Internal Server Error"
        assert error["message"] == f"Index {band} out of bounds for length 15"
        state = lavalink.player(GUILD)
        assert state is not None and state.volume == 50 + band and state.filters == {"karaoke": {"level": 0.5}}


async def test_player_volume_is_clamped_to_0_1000_as_lavaplayer_does(client: Client, lavalink: FakeLavalink) -> None:
    """PlayerRestHandler passes volume to AudioPlayer.setVolume, which keeps it in 0..1000 (no 400)."""
    await client.connect()
    await play(client, lavalink)
    assert (await client.patch_player({"volume": 5000}))["volume"] == 1000
    assert (await client.patch_player({"volume": -1}))["volume"] == 0


async def test_integer_fields_are_read_as_kotlinx_reads_them(client: Client, lavalink: FakeLavalink) -> None:
    """PlayerUpdate's volume is an Int and position a Long: kotlinx takes a JSON integer or the same digits in
    quotes, and refuses a fraction, a word or a volume past 32 bits (400, nothing applied)."""
    await client.connect()
    await play(client, lavalink)
    player = await client.patch_player({"volume": "42", "position": "1000", "paused": True})
    assert player["volume"] == 42 and player["state"]["position"] == 1000
    url = f"/v4/sessions/{client.session_id}/players/{GUILD}"
    for body in ({"volume": 2.5}, {"volume": 2**31}, {"position": "soon"}, {"volume": True}):
        status, error = await client.request("PATCH", url, json=body)
        assert status == 400 and error["message"].startswith("Failed to read request"), (body, error)
    assert lavalink.player(GUILD).volume == 42


async def test_requests_are_logged_by_normalised_route(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await play(client, lavalink)
    await client.patch_player({"volume": 250})
    assert lavalink.request_counts[PLAYER_ROUTE] == 2
    assert lavalink.request_counts["GET /v4/websocket"] == 1
    last = lavalink.requests[-1]
    assert (last.method, last.route, last.json) == (
        "PATCH",
        "/v4/sessions/{sessionId}/players/{guildId}",
        {"volume": 250},
    )
    assert last.path == f"/v4/sessions/{client.session_id}/players/{GUILD}"
    assert lavalink.player(GUILD).volume == 250


async def test_injected_request_failures(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    lavalink.fail_requests(PLAYER_ROUTE, status=503, message="busy")
    status, error = await client.request(
        "PATCH", f"/v4/sessions/{client.session_id}/players/{GUILD}", json={"volume": 5}
    )
    assert (status, error["message"], error["error"]) == (503, "busy", "Service Unavailable")
    assert (await client.patch_player({"volume": 5}))["volume"] == 5


async def test_abrupt_drop_cuts_tcp_without_a_close_frame(client: Client, lavalink: FakeLavalink) -> None:
    await client.connect()
    await client.request("PATCH", f"/v4/sessions/{client.session_id}", json={"resuming": True})
    await lavalink.drop_connections(abrupt=True)
    assert client.ws is not None and client._reader is not None
    await asyncio.wait_for(client._reader, 2)
    assert client.ws.close_code == 1006
    assert lavalink.sessions[0].connected is False  # waiting to be resumed


# -- the real wavelink ----------------------------------------------------------------------------------


def _stub_client(dispatched: list[tuple[str, tuple[Any, ...]]]) -> Any:
    """What wavelink's Node needs of a discord.Client before any player exists: ``user.id`` and ``dispatch``."""
    return SimpleNamespace(
        user=SimpleNamespace(id=int(USER_ID)),
        dispatch=lambda event, *args, **kwargs: dispatched.append((event, args)),
    )


async def test_wavelink_35_does_not_reconnect_after_a_clean_close_frame(lavalink: FakeLavalink) -> None:
    """Pins a wavelink 3.5 behaviour the cog must live with: a clean server close leaves the node dead."""
    dispatched: list[tuple[str, tuple[Any, ...]]] = []
    node = wavelink.Node(uri=lavalink.uri, password=lavalink.password, retries=1)
    try:
        await wavelink.Pool.connect(nodes=[node], client=_stub_client(dispatched))
        await lavalink.wait_for(lambda: [event for event, _ in dispatched if event == "wavelink_node_ready"])
        await lavalink.drop_connections(code=1001)
        await asyncio.sleep(0.3)
        assert lavalink.connected_clients == 0
        assert node.status is wavelink.NodeStatus.CONNECTED  # wavelink did not notice
        assert [event for event, _ in dispatched].count("wavelink_node_ready") == 1
    finally:
        await node.close(eject=True)
        await node._session.close()


async def test_real_wavelink_connects_loads_resumes_and_reconnects(lavalink: FakeLavalink) -> None:
    dispatched: list[tuple[str, tuple[Any, ...]]] = []
    client = _stub_client(dispatched)

    def readies() -> list[Any]:
        return [args[0] for event, args in dispatched if event == "wavelink_node_ready"]

    node = wavelink.Node(uri=lavalink.uri, password=lavalink.password, resume_timeout=30, retries=5)
    try:
        await wavelink.Pool.connect(nodes=[node], client=client)
        await lavalink.wait_for(readies)
        assert readies()[0].resumed is False and node.session_id == lavalink.sessions[0].session_id
        await lavalink.wait_for(lambda: lavalink.sessions[0].resuming)
        assert lavalink.sessions[0].timeout == 30
        assert (lavalink.sessions[0].client_name or "").startswith("Wavelink/")
        assert lavalink.request_counts["PATCH /v4/sessions/{sessionId}"] == 1
        assert lavalink.request_counts["GET /v4/info"] == 1

        found = await wavelink.Pool.fetch_tracks("ytsearch:debussy")
        assert isinstance(found, list) and found[0].title == "Clair de Lune"
        assert found[0].length == 301_000 and found[0].source == "youtube"
        playlist = await wavelink.Pool.fetch_tracks("https://www.youtube.com/playlist?list=PLclassicalessentials")
        assert isinstance(playlist, wavelink.Playlist) and len(playlist.tracks) == 10
        assert await wavelink.Pool.fetch_tracks("ytsearch:nothing at all here") == []
        lavalink.fail_load("broken", "nope")
        with pytest.raises(wavelink.LavalinkLoadException):
            await wavelink.Pool.fetch_tracks("broken")

        assert (await node.fetch_info()).version.major == 4
        assert (await node.fetch_stats()).players == 0
        assert await node.fetch_version() == "4.0.8"
        await node.send(
            "PATCH",
            path=f"v4/sessions/{node.session_id}/players/{GUILD}",
            data={"track": {"encoded": found[0].encoded}, "voice": VOICE},
        )
        info = await node.fetch_player_info(GUILD)
        assert info is not None and info.track is not None and info.track.title == "Clair de Lune"
        assert await node.fetch_player_info(GUILD + 1) is None

        # A network blip: wavelink reconnects with Session-Id and Lavalink resumes the session.
        old = node.session_id
        await lavalink.drop_connections(abrupt=True)
        await lavalink.wait_for(lambda: len(readies()) == 2)
        assert readies()[1].resumed is True and node.session_id == old
        assert lavalink.player(GUILD) is not None

        # A crash: the session is gone; wavelink gets a fresh one.
        await lavalink.restart()
        await lavalink.wait_for(lambda: len(readies()) == 3, timeout=10)
        assert readies()[2].resumed is False and node.session_id != old
        assert lavalink.players() == []
    finally:
        await node.close(eject=True)  # leaves wavelink's global Pool empty for other tests
        await node._session.close()
