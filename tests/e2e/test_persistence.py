"""Persistence in a running bot: every change reaches the live record, jobs, shutdown, races.

Real discord.py + wavelink + SonoraCog in this process, through FakeDiscord and FakeLavalink
(fixtures in ``tests/e2e/conftest.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import discord
import pytest
import wavelink
from conftest import RunningBot, StartBot
from factories import ManualClock

from sonora_cog.capture import to_playable
from sonora_cog.config import SnapshotSettings
from sonora_cog.meta import SnapshotKind
from sonora_cog.model import LoopMode, SessionState
from sonora_cog.player import SonoraPlayer
from sonora_cog.session import Phase
from sonora_cog.testing.music_bot import preset_filters


async def live(running: RunningBot, guild_id: int | None = None) -> SessionState | None:
    return await running.cog.manager.read_live(guild_id or running.guild.id)


@pytest.fixture
async def debounced(start_bot: StartBot) -> RunningBot:
    # no checkpoint job during the test: only the debounced writes of SonoraPlayer can save
    return await start_bot(snapshots=SnapshotSettings(debounce=0.2, checkpoint_interval=3600, auto_enabled=False))


async def test_every_state_change_reaches_the_live_record(debounced: RunningBot) -> None:
    running = debounced
    await running.play("clair de lune")
    player = running.player()
    assert isinstance(player, SonoraPlayer)
    await running.live_record(lambda s: s.queue.current is not None and s.queue.current.title == "Clair de Lune")

    await player.set_volume(33)
    await running.live_record(lambda s: s.player.volume == 33)
    await asyncio.sleep(0.3)  # it plays a little: the last playerUpdate is behind
    await player.pause(True)
    frozen = running.lavalink_player().position  # type: ignore[union-attr]
    assert player.position == frozen  # the player knows where Lavalink froze, at once
    await running.live_record(lambda s: s.player.paused and s.player.position == frozen)
    await player.pause(False)
    await player.seek(60_000)
    assert 60_000 <= player.position < 61_000  # right after the seek too
    await running.live_record(lambda s: s.player.position >= 59_000 and not s.player.paused)
    await player.set_filters(preset_filters("nightcore"))
    await running.live_record(lambda s: "timescale" in s.filters.active_filters)
    extra = to_playable(running.cog.current_state(running.discord_guild).queue.current)  # type: ignore[union-attr]
    player.queue.put(extra)
    await running.live_record(lambda s: len(s.queue.upcoming) == 1)
    player.queue.mode = wavelink.QueueMode.loop
    await running.live_record(lambda s: s.queue.loop_mode is LoopMode.track)
    player.autoplay = wavelink.AutoPlayMode.partial
    await running.live_record(lambda s: s.autoplay.mode.value == "partial")
    player.queue.clear()
    await running.live_record(lambda s: len(s.queue.upcoming) == 0)
    player.extras = {"announce_channel_id": "42"}  # assigning extras is seen: no mark_dirty() needed
    await running.live_record(lambda s: s.extras == {"announce_channel_id": "42"})
    player.extras["dj_id"] = "7"  # and so is changing one key while playing
    await running.live_record(lambda s: s.extras == {"announce_channel_id": "42", "dj_id": "7"})
    del player.extras["announce_channel_id"]
    await running.live_record(lambda s: s.extras == {"dj_id": "7"})
    player.extras["stats"] = {"skips": 0}
    await running.live_record(lambda s: s.extras.get("stats") == {"skips": 0})
    player.extras["stats"]["skips"] = 3  # nested: the player cannot see it; mark_dirty() says so
    player.mark_dirty()
    await running.live_record(lambda s: s.extras.get("stats") == {"skips": 3})
    player.shuffle_enabled = True
    await running.live_record(lambda s: s.queue.shuffle_enabled)
    assert player.queue.history is not None and len(player.queue.history) > 0
    player.queue.history.clear()  # the history queue is observed too
    await running.live_record(lambda s: s.queue.history == ())


async def test_a_change_the_player_cannot_see_is_found_by_a_checkpoint_and_warned_once(
    start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sonora_cog.writer")
    running = await start_bot(snapshots=SnapshotSettings(debounce=0.1, checkpoint_interval=0.5, auto_enabled=False))
    await running.play("Clair de Lune")
    await running.play("Boléro")
    player = running.player()
    assert player is not None
    await running.live_record(lambda s: len(s.queue.upcoming) == 1)
    player.queue[0].extras = {"requester_id": "changed"}  # a queued track's extras, changed in place

    def requester(state: SessionState) -> object:
        return state.queue.upcoming[0].user_data.get("requester_id")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "changed without SonoraPlayer seeing it" in r.getMessage()]

    await running.live_record(lambda s: requester(s) == "changed", timeout=10)
    await running.wait_for(warnings)  # logged once that checkpoint is over
    assert len(warnings()) == 1 and str(running.guild.id) in warnings()[0]
    player.queue[0].extras = {"requester_id": "again"}
    await running.live_record(lambda s: requester(s) == "again", timeout=10)
    await asyncio.sleep(1)  # two more checkpoints
    assert len(warnings()) == 1  # once per guild


async def test_a_moderator_moving_the_bot_to_a_channel_made_meanwhile_keeps_the_session(debounced: RunningBot) -> None:
    running = debounced
    await running.play("clair de lune")
    await running.live_record(lambda s: s.queue.current is not None)
    stage = running.guild.add_voice_channel("Made later")  # Discord announces it: CHANNEL_CREATE
    await running.fake.move_bot(running.guild.id, stage.id)
    await running.wait_for(lambda: running.bot.get_channel(stage.id) is not None)
    state = await running.live_record(lambda s: s.channel_id == stage.id)
    assert state.queue.current is not None and running.cog.owner.phase(running.guild.id) is Phase.live


async def test_a_plain_wavelink_player_is_covered_by_events_and_checkpoints(start_bot: StartBot) -> None:
    running = await start_bot(snapshots=SnapshotSettings(debounce=0.1, checkpoint_interval=0.5, auto_enabled=False))
    channel = running.bot.get_channel(running.world.world.voice.id)
    assert isinstance(channel, discord.VoiceChannel)
    player = await channel.connect(cls=wavelink.Player)
    track = wavelink.Playable(running.track("Midnight Drive"))  # type: ignore[arg-type]
    await player.play(track)
    state = await running.live_record(lambda s: s.queue.current is not None)
    assert state.queue.current is not None and state.queue.current.title == "Midnight Drive"
    await player.set_volume(70)  # no event for this one: the checkpoint job picks it up
    await running.live_record(lambda s: s.player.volume == 70)


async def test_one_broken_guild_never_stops_the_checkpoint_for_the_others(
    debounced: RunningBot, caplog: pytest.LogCaptureFixture
) -> None:
    running = debounced
    other = running.world.other
    await running.play("clair de lune")
    await running.play("paper boats", guild=other.guild)
    broken = running.player()
    assert isinstance(broken, SonoraPlayer)
    await running.live_record(lambda s: s.queue.current is not None)
    # the store cannot replace this guild's live record: a folder stands where its file was
    record = Path(running.cog.settings.storage.path) / "live" / f"{running.guild.id}.snr"
    record.unlink()
    record.mkdir()
    await broken.set_volume(44)
    healthy = running.player(other.guild.id)
    assert healthy is not None
    await healthy.set_volume(12)
    caplog.set_level(logging.ERROR, logger="sonora_cog.writer")
    written = await running.cog.owner.checkpoint()
    assert written == 1
    state = await live(running, other.guild.id)
    assert state is not None and state.player.volume == 12
    assert f"could not save the live record of guild {running.guild.id}" in caplog.text


async def test_extras_that_are_not_json_lose_only_those_keys(
    debounced: RunningBot, caplog: pytest.LogCaptureFixture
) -> None:
    running = debounced
    await running.play("clair de lune")
    player = running.player()
    assert isinstance(player, SonoraPlayer)
    caplog.set_level(logging.WARNING, logger="sonora_cog.manager")
    player.extras = {"not json": object(), "dj": "ana"}
    state = await running.live_record(lambda s: s.extras.get("dj") == "ana")
    assert "not json" not in state.extras and state.queue.current is not None
    assert "saved without 'not json'" in caplog.text


async def test_auto_snapshots_are_incremental(debounced: RunningBot) -> None:
    running = debounced
    owner, manager = running.cog.owner, running.cog.manager
    clock = ManualClock()
    owner.clock = clock  # each guild's interval is measured on it (see test_snapshot_cadence.py)
    await running.play("clair de lune")
    clock.advance(owner.cadence(running.guild.id).interval)
    assert await owner.auto_snapshot() == 1
    await asyncio.sleep(0.3)  # the track advanced: that alone is not a change
    clock.advance(owner.cadence(running.guild.id).interval)
    assert await owner.auto_snapshot() == 0
    player = running.player()
    assert player is not None
    await player.set_volume(55)
    assert await owner.auto_snapshot() == 1
    kinds = [m.kind for m in await manager.list_snapshots(running.guild.id)]
    assert kinds == [SnapshotKind.auto, SnapshotKind.auto]


async def test_unloading_the_cog_writes_a_shutdown_snapshot_and_the_live_record(debounced: RunningBot) -> None:
    running = debounced
    await running.play("glass houses")
    player = running.player()
    assert player is not None
    await player.set_volume(77)
    manager = running.cog.manager
    await running.bot.remove_cog(running.cog.qualified_name)
    await asyncio.sleep(0.05)  # AsyncIOScheduler.shutdown runs on the next loop iteration
    assert running.cog.scheduler.running is False
    manager.__init__(running.settings)  # the cog closed its store; read it again  # type: ignore[misc]
    metas = await manager.list_snapshots(running.guild.id)
    assert [m.kind for m in metas] == [SnapshotKind.shutdown]
    state = await manager.read_live(running.guild.id)
    assert state is not None and state.player.volume == 77


async def test_a_manual_restore_racing_the_checkpoint_never_writes_a_mixed_state(debounced: RunningBot) -> None:
    running = debounced
    await running.play("clair de lune")
    for title in ("boléro", "canon in d"):
        await running.play(title)
    old = running.cog.current_state(running.discord_guild)
    assert old is not None and old.queue.current is not None
    snapshot = dataclasses.replace(
        old,
        queue=dataclasses.replace(old.queue, current=old.queue.upcoming[-1], upcoming=(old.queue.current,) * 3),
        player=dataclasses.replace(old.player, volume=321),
    )
    written: list[SessionState] = []
    manager = running.cog.manager
    original = manager.encode_live

    async def recording(state: SessionState) -> Any:  # the checkpoint encodes each guild it writes
        written.append(state)
        return await original(state)

    manager.encode_live = recording  # type: ignore[method-assign]
    restore = asyncio.create_task(running.cog.restore(running.discord_guild, snapshot))
    while not restore.done():
        await running.cog.owner.checkpoint()
        await asyncio.sleep(0)
    report = restore.result()
    assert report.ok, report.reason
    await running.cog.owner.checkpoint()
    assert written, "the checkpoint never ran"
    for state in written:
        signature = (
            state.queue.current.encoded if state.queue.current else None,
            len(state.queue.upcoming),
            state.player.volume,
        )
        assert signature in {
            (old.queue.current.encoded, len(old.queue.upcoming), old.player.volume),
            (snapshot.queue.current.encoded, 3, 321),  # type: ignore[union-attr]
        }
    final = await live(running)
    assert final is not None and final.player.volume == 321 and len(final.queue.upcoming) == 3


async def test_checkpoint_writes_only_changed_guilds_plus_a_heartbeat(start_bot: StartBot) -> None:
    running = await start_bot(snapshots=SnapshotSettings(debounce=3600, checkpoint_interval=3600, auto_enabled=False))
    other = running.world.other
    await running.play("clair de lune")
    await running.play("paper boats", guild=other.guild)
    owner = running.cog.owner
    assert await owner.checkpoint() == 2  # both changed (they started playing)
    assert await owner.checkpoint() == 0  # both still playing, nothing changed: no write at all
    heartbeat = await running.cog.manager.read_heartbeat(owner.key)
    assert heartbeat is not None
    player = running.player(other.guild.id)
    assert player is not None
    await player.set_volume(5)
    assert await owner.checkpoint() == 1
    state = await live(running, other.guild.id)
    assert state is not None and state.player.volume == 5
    assert (await running.cog.manager.read_heartbeat(owner.key) or 0) >= heartbeat


async def test_a_restore_that_fails_verification_rolls_back_to_the_backup(debounced: RunningBot) -> None:
    running = debounced
    await running.play("clair de lune")
    backup = running.cog.current_state(running.discord_guild)
    assert backup is not None and backup.queue.current is not None
    impossible = running.track("Paper Boats")
    from sonora_cog.model import TrackState

    bad = dataclasses.replace(
        backup,
        queue=dataclasses.replace(
            backup.queue, current=TrackState({**impossible, "playlist": None, "recommended": False})
        ),
        # far past the end of the track: Lavalink cannot be where the state says it is
        player=dataclasses.replace(backup.player, position=impossible["info"]["length"] + 600_000),
    )
    failed: list[Any] = []

    async def on_sonora_restore_failed(guild: Any, error: Exception) -> None:
        failed.append((guild, error))

    running.bot.add_listener(on_sonora_restore_failed)
    report = await running.cog.restore(running.discord_guild, bad, backup=backup)
    assert report.status.value == "rolled back", report
    assert report.reason is not None and "verification failed" in report.reason
    state = running.lavalink_player()
    assert state is not None and state.track is not None and state.track["info"]["title"] == "Clair de Lune"


async def test_state_saved_event_reaches_bot_code(debounced: RunningBot) -> None:
    running = debounced
    saved: list[tuple[int, Any]] = []

    async def on_sonora_state_saved(guild_id: int, meta: Any) -> None:
        saved.append((guild_id, meta))

    running.bot.add_listener(on_sonora_state_saved)
    await running.play("midnight drive")
    await running.wait_for(lambda: saved)
    guild_id, meta = saved[-1]
    assert guild_id == running.guild.id and meta.kind is SnapshotKind.live and meta.current_title == "Midnight Drive"
