"""A second, independent Lavalink client drives FakeLavalink: Lavalink.py 5.x, through its public API only.

wavelink is the client the fake was built against; Lavalink.py (``lavalink`` on PyPI) is written by other
people from the same Lavalink v4 protocol, so where it accepts the fake, the fake follows the protocol and
not one client's habits. It covers the basics: the node connects (``ready`` op with a session id), tracks
load and decode (an ``http`` track too: Lavalink.py's own decoder reads the container probe lavaplayer
writes after the source name, which is how FakeLavalink's missing probe was found), a player gets its
voice update, plays (``TrackStartEvent``), is paused and unpaused, gets filters, receives player updates,
moves on to the next track when one finishes, gets the exception, stuck and voice-closed events, resumes
a session by its id from a new client, recovers from a dropped connection its own way, and the client
closes without leaving anything open. Where Lavalink.py's behaviour is its own choice rather than the
protocol's, the test says so (see the dropped-connection test).

A message Lavalink.py cannot parse would only be logged by it, so every test also fails on an error
logged by the ``lavalink`` loggers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import lavalink
import pytest

from sonora_cog.testing.fake_lavalink import FakeLavalink
from sonora_cog.testing.trackcodec import decode_track, encode_track

USER_ID = 170939974227541168
GUILD = 817327181659111454
VOICE_CHANNEL = 42
_E = TypeVar("_E", bound=lavalink.Event)


@dataclass
class Harness:
    """A FakeLavalink, a Lavalink.py client with one node connected to it, and every event it dispatched."""

    fake: FakeLavalink
    client: lavalink.Client[lavalink.DefaultPlayer]
    node: lavalink.Node
    events: list[lavalink.Event] = field(default_factory=list)

    def seen(self, kind: type[_E], where: Callable[[_E], bool] = lambda _: True) -> list[_E]:
        return [e for e in self.events if isinstance(e, kind) and where(e)]

    async def wait_for(self, kind: type[_E], where: Callable[[_E], bool] = lambda _: True) -> _E:
        found = await self.fake.wait_for(lambda: self.seen(kind, where), 5.0)
        return found[-1]


async def _start(fake: FakeLavalink, *, session_id: str | None = None) -> Harness:
    """A Lavalink.py client whose one node has connected to ``fake`` (resuming ``session_id``) and is ready."""
    client: lavalink.Client[lavalink.DefaultPlayer] = lavalink.Client(USER_ID)
    events: list[lavalink.Event] = []

    async def record(event: lavalink.Event) -> None:
        events.append(event)

    client.add_event_hook(record)
    node = client.add_node("127.0.0.1", fake.port, fake.password, "local", name="fake", session_id=session_id)
    harness = Harness(fake, client, node, events)
    await harness.wait_for(lavalink.NodeReadyEvent)
    return harness


@pytest.fixture
async def harness(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Harness]:
    caplog.set_level(logging.WARNING, logger="lavalink")
    async with FakeLavalink(player_update_interval=0.05) as fake:
        fake.seed_demo_catalogue()
        harness = await _start(fake)
        try:
            yield harness
        finally:
            await harness.client.close()
    errors = [r for r in caplog.records if r.name.startswith("lavalink") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def _connect_voice(harness: Harness) -> lavalink.DefaultPlayer:
    """Create the guild's player and forward Discord's two voice events, as a bot's gateway listener does."""
    player = harness.client.player_manager.create(GUILD)
    await harness.client.voice_update_handler(
        {
            "t": "VOICE_STATE_UPDATE",
            "d": {
                "guild_id": str(GUILD),
                "user_id": str(USER_ID),
                "session_id": "discord-voice-session",
                "channel_id": str(VOICE_CHANNEL),
            },
        }
    )
    await harness.client.voice_update_handler(
        {
            "t": "VOICE_SERVER_UPDATE",
            "d": {"guild_id": str(GUILD), "token": "voice-token", "endpoint": "eu.discord.media"},
        }
    )
    return player


async def test_node_connects_and_is_ready(harness: Harness) -> None:
    ready = harness.seen(lavalink.NodeReadyEvent)[0]
    assert ready.session_id == harness.node.session_id and ready.resumed is False
    assert harness.node.available
    (session,) = harness.fake.sessions
    assert session.session_id == ready.session_id
    assert session.user_id == str(USER_ID) and (session.client_name or "").startswith("Lavalink.py/")
    await harness.fake.wait_for(lambda: harness.node.stats.uptime > 0)  # the stats op was parsed
    info = await harness.node.get_info()
    assert info["version"]["major"] == 4 and "http" in info["sourceManagers"]
    assert await harness.node.get_version() == info["version"]["semver"]
    assert await harness.node.update_session(resuming=True, timeout=30) == {"resuming": True, "timeout": 30}


async def test_tracks_load_and_decode(harness: Harness) -> None:
    search = await harness.client.get_tracks("ytsearch:clair de lune")
    assert search.load_type is lavalink.LoadType.SEARCH
    (clair,) = search.tracks
    assert (clair.title, clair.author, clair.source_name, clair.duration) == (
        "Clair de Lune",
        "Claude Debussy",
        "youtube",
        301_000,
    )
    by_uri = await harness.client.get_tracks(clair.uri)
    assert by_uri.load_type is lavalink.LoadType.TRACK and by_uri.tracks[0].track == clair.track
    playlist = await harness.client.get_tracks("https://www.youtube.com/playlist?list=PLclassicalessentials")
    assert playlist.load_type is lavalink.LoadType.PLAYLIST and len(playlist.tracks) == 10
    assert playlist.playlist_info.name == "Classical Essentials" and playlist.playlist_info.selected_track == -1
    harness.fake.fail_load("https://www.youtube.com/watch?v=gone", "This video is unavailable.")
    failed = await harness.client.get_tracks("https://www.youtube.com/watch?v=gone")
    assert failed.load_type is lavalink.LoadType.ERROR and failed.error is not None
    assert (failed.error.message, failed.error.severity) == ("This video is unavailable.", lavalink.Severity.COMMON)
    assert (await harness.client.get_tracks("ytsearch:no such song anywhere")).load_type is lavalink.LoadType.EMPTY

    decoded = await harness.client.decode_track(clair.track)
    assert (decoded.identifier, decoded.title, decoded.uri) == (clair.identifier, clair.title, clair.uri)
    assert [t.title for t in await harness.client.decode_tracks([clair.track, clair.track])] == [clair.title] * 2
    offline = lavalink.decode_track(clair.track)  # Lavalink.py's own binary decoder
    assert (offline.identifier, offline.title, offline.duration) == (clair.identifier, clair.title, 301_000)


async def test_an_http_track_decodes_in_lavalinkpy(harness: Harness) -> None:
    url = "https://cdn.example.invalid/station/jingle.mp3"
    added = harness.fake.add_track("Jingle", "Station", 30_000, uri=url, source="http")
    (jingle,) = (await harness.client.get_tracks(url)).tracks
    assert (jingle.source_name, jingle.identifier, jingle.uri) == ("http", url, url)
    assert (await harness.client.decode_track(jingle.track)).title == "Jingle"
    # Lavalink.py's decoder reads the http source's container probe (its DEFAULT_DECODER_MAPPING, from
    # lavaplayer's ProbingAudioSourceManager): the fake now writes it, so the decode ends exactly at the position.
    offline = lavalink.decode_track(added["encoded"])
    assert offline.title == "Jingle" and offline.source_name == "http"
    assert offline.extra["source_specific"] == {"probe_info": "mp3"} and offline.position == 0
    # Without the probe (as the fake encoded http tracks before), Lavalink.py reads the position as the probe.
    with pytest.raises(struct.error):  # its reader runs out of bytes for the position
        lavalink.decode_track(encode_track(decode_track(added["encoded"]), details=b""))


async def test_player_plays_pauses_filters_and_receives_updates(harness: Harness) -> None:
    player = await _connect_voice(harness)
    state = await harness.fake.wait_for(lambda: harness.fake.player(GUILD))
    assert (
        state is not None
        and state.connected
        and state.voice
        == {
            "token": "voice-token",
            "endpoint": "eu.discord.media",
            "sessionId": "discord-voice-session",
            "channelId": str(VOICE_CHANNEL),
        }
    )
    short = harness.fake.add_track("Short Intro", "Tester", 300)
    (intro,) = (await harness.client.get_tracks(short["info"]["uri"])).tracks
    (clair,) = (await harness.client.get_tracks("ytsearch:clair de lune")).tracks
    player.add(intro, requester=1)
    player.add(clair, requester=1)
    await player.play()
    started = await harness.wait_for(lavalink.TrackStartEvent, lambda e: e.track.identifier == intro.identifier)
    assert started.player is player
    # The intro finishes; Lavalink.py's DefaultPlayer plays the next queued track on TrackEndEvent(finished).
    ended = await harness.wait_for(lavalink.TrackEndEvent)
    assert ended.reason is lavalink.EndReason.FINISHED
    await harness.wait_for(lavalink.TrackStartEvent, lambda e: e.track.identifier == clair.identifier)
    assert player.current is not None and player.current.identifier == clair.identifier

    update = await harness.wait_for(lavalink.PlayerUpdateEvent, lambda e: e.position > 0)
    assert update.player is player and update.connected is True
    await harness.fake.wait_for(lambda: player.position > 0)

    await player.set_pause(True)
    paused = harness.fake.player(GUILD)
    assert paused is not None and paused.paused is True and player.paused is True
    await asyncio.sleep(0.1)
    assert (still := harness.fake.player(GUILD)) is not None and still.position == paused.position  # time stood still
    assert (await harness.node.get_player(GUILD))["paused"] is True
    await player.set_pause(False)
    resumed = harness.fake.player(GUILD)
    assert resumed is not None and resumed.paused is False
    await harness.fake.wait_for(lambda: (p := harness.fake.player(GUILD)) is not None and p.position > paused.position)

    timescale = lavalink.Timescale()
    timescale.update(speed=1.25)
    volume = lavalink.Volume()
    volume.update(volume=0.5)
    await player.set_filters(timescale, volume)
    filtered = harness.fake.player(GUILD)
    assert filtered is not None
    assert filtered.filters == {"timescale": {"speed": 1.25, "pitch": 1.0, "rate": 1.0}, "volume": 0.5}
    await player.set_volume(40)
    assert (at_40 := harness.fake.player(GUILD)) is not None and at_40.volume == 40

    await harness.client.player_manager.destroy(GUILD)
    assert harness.fake.player(GUILD) is None


async def test_exception_stuck_and_voice_closed_events(harness: Harness) -> None:
    player = await _connect_voice(harness)
    (clair,) = (await harness.client.get_tracks("ytsearch:clair de lune")).tracks
    await player.play(clair)
    await harness.wait_for(lavalink.TrackStartEvent)
    await harness.fake.send_track_exception(
        GUILD, "Boom", severity="fault", cause="java.io.IOException: x", end_track=False
    )
    failed = await harness.wait_for(lavalink.TrackExceptionEvent)
    assert (failed.message, failed.severity, failed.cause) == (
        "Boom",
        lavalink.Severity.FAULT,
        "java.io.IOException: x",
    )
    assert failed.track.identifier == clair.identifier
    await harness.fake.send_track_stuck(GUILD, threshold_ms=8_000)
    stuck = await harness.wait_for(lavalink.TrackStuckEvent)
    assert stuck.threshold == 8_000 and stuck.track.identifier == clair.identifier
    # DefaultPlayer answers a stuck track by playing the next one; with an empty queue it stops the player.
    await harness.wait_for(lavalink.QueueEndEvent)
    stopped = await harness.wait_for(lavalink.TrackEndEvent)
    assert stopped.reason is lavalink.EndReason.STOPPED
    await harness.fake.close_voice(GUILD, 4006)
    closed = await harness.wait_for(lavalink.WebSocketClosedEvent)
    assert (closed.code, closed.by_remote, closed.player) == (4006, True, player)
    assert closed.reason == "Your session is no longer valid."


async def test_a_new_client_resumes_the_session_by_its_id(harness: Harness) -> None:
    """A restarted bot resumes with Lavalink.py by giving ``add_node`` the session id it kept."""
    await harness.node.update_session(resuming=True, timeout=30)
    player = await _connect_voice(harness)
    (clair,) = (await harness.client.get_tracks("ytsearch:clair de lune")).tracks
    await player.play(clair)
    await harness.wait_for(lavalink.TrackStartEvent)
    session_id = harness.node.session_id
    await harness.client.close()  # the old process goes; Lavalink keeps a resumable session and its players
    await harness.fake.wait_for(lambda: harness.fake.connected_clients == 0)
    assert [(s.session_id, s.connected, s.player_count) for s in harness.fake.sessions] == [(session_id, False, 1)]

    again = await _start(harness.fake, session_id=session_id)
    try:
        ready = again.seen(lavalink.NodeReadyEvent)[0]
        assert (ready.resumed, ready.session_id) == (True, session_id)
        (kept,) = await again.node.get_players()
        assert kept["track"]["info"]["identifier"] == clair.identifier and kept["state"]["connected"] is True
    finally:
        await again.client.close()


async def test_after_a_network_drop_lavalinkpy_reconnects_and_replays_its_player(harness: Harness) -> None:
    """Lavalink.py 5.11 does not resume on a reconnect: its Transport builds the ``Session-Id`` header once,
    before its reconnect loop, from the id given to ``add_node``; a dropped connection therefore opens a new
    session (the protocol allows it: resuming is the client's choice), and Lavalink.py moves its players there
    itself (``DefaultPlayer.change_node``: voice update, then the current track at its last position).
    The fake, as Lavalink, keeps the old session resumable until its timeout."""
    await harness.node.update_session(resuming=True, timeout=30)
    player = await _connect_voice(harness)
    (clair,) = (await harness.client.get_tracks("ytsearch:clair de lune")).tracks
    await player.play(clair, start_time=60_000)
    await harness.wait_for(lavalink.TrackStartEvent)
    old_session = harness.node.session_id
    await harness.fake.drop_connections(abrupt=True)
    ready = await harness.wait_for(lavalink.NodeReadyEvent, lambda e: e.session_id != old_session)
    moved = await harness.wait_for(lavalink.NodeChangedEvent)
    assert moved.player is player
    replayed = harness.fake.players(ready.session_id)
    assert [(p.track or {}).get("info", {}).get("identifier") for p in replayed] == [clair.identifier]
    assert replayed[0].connected and replayed[0].position >= 60_000
    assert {s.session_id: s.connected for s in harness.fake.sessions} == {ready.session_id: True, old_session: False}


def _live_clients() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, lavalink.Client))


async def test_client_closes_cleanly() -> None:
    before = _live_clients()
    async with FakeLavalink() as fake:
        harness = await _start(fake)
        await harness.client.close()
        await fake.wait_for(lambda: fake.connected_clients == 0 and not fake.sessions)
        await asyncio.sleep(0)  # let Lavalink.py's disconnect bookkeeping run
        del harness
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            assert _live_clients() == before  # collected, so an unclosed aiohttp session would have warned now
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
