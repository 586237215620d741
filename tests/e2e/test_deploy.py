"""Deploy tags with a real bot process (the demo's music bot) through FakeDiscord and FakeLavalink:
``deploy prepare`` → change every guild → ``deploy rollback`` with the bot running (paced batches seen in
FakeLavalink's request log) and with no bot running; a guild whose channel is gone is reported."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from conftest import StartBot, manager_for

from sonora_cog import deploy
from sonora_cog.config import DeploySettings, SnapshotSettings
from sonora_cog.demo import DemoScenario
from sonora_cog.deploy import Step

DEPLOY_CONFIG = "[deploy]\npoll_interval = 0.5\n"


async def cli(demo: DemoScenario, *args: str) -> tuple[int, str]:
    """Run ``python -m sonora_cog deploy ...`` as a subprocess without blocking the fakes' event loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONORA_")} | {"COLUMNS": "250"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sonora_cog",
        "deploy",
        *args,
        "--config",
        str(demo.config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


def volumes(demo: DemoScenario) -> dict[int, int | None]:
    players = {guild.id: demo.lavalink.player(guild.id) for guild, *_ in demo.world}
    return {g: p.volume if p is not None else None for g, p in players.items()}


def track_sent_at(demo: DemoScenario, since: float) -> dict[int, float]:
    """When each guild's player was first sent a track after ``since`` (a restore starting it)."""
    first: dict[int, float] = {}
    for request in demo.lavalink.requests:
        starts = isinstance(request.json, dict) and request.json.get("track")
        if request.method == "PATCH" and "/players/" in request.path and request.at >= since and starts:
            first.setdefault(int(request.path.rsplit("/", 1)[1]), request.at)
    return first


async def play_and_prepare(demo: DemoScenario, tag: str) -> dict[int, int | None]:
    """Every guild plays; ``deploy prepare`` tags it; return each guild's volume at the tag."""
    await demo.play_everywhere()
    await demo.wait_saved()
    tagged = volumes(demo)
    code, out = await cli(demo, "prepare", "--tag", tag)
    assert code == 0, out
    assert f"deploy tag {tag}: {demo.guild_count} snapshotted" in out
    return tagged


async def change_everything(demo: DemoScenario) -> None:
    for index in range(demo.guild_count):
        await demo.command(index, "volume", value=13)
        await demo.command(index, "play", query="paper boats")
    await demo.wait_saved()


async def test_rollback_with_the_bot_running_goes_in_paced_batches(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=4, extra_config=DEPLOY_CONFIG) as demo:
        tagged = await play_and_prepare(demo, "v1.0")
        await change_everything(demo)
        assert set(volumes(demo).values()) == {13}

        started = demo.lavalink.requests[-1].at
        code, out = await cli(demo, "rollback", "v1.0", "--wait", "--batch-size", "2", "--pause", "1.5")
        assert code == 0, out
        assert "asked " in out and "rollback to v1.0: 4 rolled back" in out
        assert volumes(demo) == tagged
        sent = sorted(track_sent_at(demo, started).values())
        assert len(sent) == 4
        assert sent[1] - sent[0] < 1.0  # one batch: together
        assert sent[2] - sent[1] >= 1.4  # the pause between batches
        assert sent[3] - sent[2] < 1.0

        manager = manager_for(demo)
        try:
            status = await deploy.status(manager, "v1.0")
            assert [s.step for s in status] == [Step.rolled_back] * 4
            assert all(s.by and s.by != "cli" for s in status)  # the bot process did it
            kinds = {m.kind.value for m in await manager.list_snapshots(demo.world[0][0].id)}
            assert "pre-restore" in kinds  # what played before the rollback was kept
            assert await deploy.read_request(manager) is None  # done: the request was withdrawn
        finally:
            await manager.close()


async def test_a_guild_whose_channel_is_gone_is_reported_and_the_others_roll_back(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=2, extra_config=DEPLOY_CONFIG) as demo:
        tagged = await play_and_prepare(demo, "v2")
        await change_everything(demo)
        gone_guild, _text, gone_voice, _user = demo.world[1]
        await demo.discord.delete_channel(gone_guild.id, gone_voice.id)

        code, out = await cli(demo, "rollback", "v2", "--wait", "--pause", "0", "--json")
        assert code == 1, out
        report = {g["guild"]: g for g in json.loads(out[out.index("{") :])["guilds"]}
        kept = demo.world[0][0].id
        assert report[str(kept)]["step"] == "rolled back"
        assert volumes(demo)[kept] == tagged[kept]
        assert report[str(gone_guild.id)]["step"] == "rollback failed"
        assert "channel" in report[str(gone_guild.id)]["why"]


async def test_rollback_with_no_bot_running_rewrites_the_live_records_and_the_next_start_restores_them(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=2, extra_config=DEPLOY_CONFIG) as demo:
        tagged = await play_and_prepare(demo, "v3")
        await change_everything(demo)
        await demo.bot.stop()  # a graceful stop: the process says it is gone
        code, out = await cli(demo, "rollback", "v3")
        assert code == 0, out
        assert "no bot process runs on this store" in out and "rollback to v3: 2 rolled back" in out

        await demo.start_bot()
        await demo.wait_restored(2)
        await asyncio.sleep(0.5)
        assert volumes(demo) == tagged
        manager = manager_for(demo)
        try:
            status = await deploy.status(manager, "v3")
            # the new start restored both from the rewritten records, and recorded it in the tag
            assert [s.step for s in status] == [Step.restored] * 2
        finally:
            await manager.close()


# -- in this process: the Python API and the owner-only text command ---------------------------------------


async def test_python_api_and_the_owner_command(start_bot: StartBot) -> None:
    running = await start_bot(
        snapshots=SnapshotSettings(debounce=0.1, auto_enabled=False), deploy=DeploySettings(owner_command=True, pause=0)
    )
    await running.play("clair de lune")
    player = running.player()
    assert player is not None
    await player.set_volume(42)
    results = await running.cog.deploy.prepare("v9")  # writes the live state first: the tag has volume 42
    assert [(r.guild_id, r.step) for r in results] == [(running.guild.id, Step.snapshotted)]
    await player.set_volume(90)

    rolled = await running.cog.deploy.rollback("v9", batch_size=1, pause=0)
    assert [(r.guild_id, r.step) for r in rolled] == [(running.guild.id, Step.rolled_back)]
    lavalink = running.lavalink_player()
    assert lavalink is not None and lavalink.volume == 42

    fake, world = running.fake, running.world.world
    mention = f"<@{fake.bot_user.id}>"
    stranger = world.user
    await fake.send_user_message(world.guild.id, world.text.id, stranger.id, f"{mention} sonora-deploy status v9")
    refused = await fake.wait_for_message(world.text.id, lambda m: "owner" in m.content)
    assert "only the bot's owner" in refused.content
    fake.owner_id = stranger.id  # now they own the bot (the application's owner)
    running.bot.owner_id = None
    await fake.send_user_message(world.guild.id, world.text.id, stranger.id, f"{mention} sonora-deploy status v9")
    answer = await fake.wait_for_message(world.text.id, lambda m: m.content.startswith("v9:"))
    assert "1 rolled back" in answer.content and str(running.guild.id) in answer.content


async def test_a_rollback_brings_the_track_back_where_it_played_at_prepare_not_where_it_began(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=1, extra_config=DEPLOY_CONFIG) as demo:
        guild = demo.world[0][0]
        await demo.play_one(0)
        await asyncio.sleep(4)  # it plays on; its live record is not rewritten, the checkpoint heartbeat is
        player = demo.lavalink.player(guild.id)
        assert player is not None and player.position > 3000
        at_prepare = player.position
        code, out = await cli(demo, "prepare", "--tag", "mid-song")
        assert code == 0, out
        manager = manager_for(demo)
        try:
            [meta] = (await deploy.tag_snapshots(manager, "mid-song")).values()
            tagged = await manager.load_snapshot(meta.id, guild.id)
        finally:
            await manager.close()
        # moved forward to the last heartbeat (one checkpoint interval, 1 s here), not left at the track's start
        assert at_prepare - 1500 <= tagged.player.position <= at_prepare + 500

        await demo.command(0, "play", query="paper boats")  # the deploy changed the music
        code, out = await cli(demo, "rollback", "mid-song", "--wait", "--pause", "0")
        assert code == 0, out
        player = demo.lavalink.player(guild.id)
        assert player is not None and player.track is not None
        assert player.track["info"]["title"] == tagged.queue.current.title  # type: ignore[union-attr]
        assert player.position >= tagged.player.position - 1000 - 500  # less the 1 s rewind, a little later


async def test_rollback_safeguards_for_pipelines(scenario: Callable[..., AsyncIterator[DemoScenario]]) -> None:
    async with scenario(guilds=2, extra_config=DEPLOY_CONFIG) as demo:
        await play_and_prepare(demo, "safe")
        # with a bot running, an offline rewrite would be overwritten by its next write: refused
        code, out = await cli(demo, "rollback", "safe", "--offline")
        assert code == 1 and "refused" in out and "runs on this store" in out

        # --json: stdout is JSON only, with the request id a script follows
        env = {k: v for k, v in os.environ.items() if not k.startswith("SONORA_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sonora_cog",
            "deploy",
            "rollback",
            "safe",
            "--json",
            "--batch-size",
            "1",
            "--pause",
            "4",
            "--config",
            str(demo.config_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0
        request = json.loads(stdout)["request"]

        # a second rollback while that one runs (two batches, 4 s apart) is refused, not interleaved
        code, out = await cli(demo, "rollback", "safe", "--wait")
        assert code == 1 and f"request {request}" in out and "still in progress" in out
        manager = manager_for(demo)
        try:
            pending = await deploy.read_request(manager)
            assert pending is not None and pending.id == request
            await wait_for(lambda: _finished(manager, pending), 30)
            # --wait that gives up withdraws its request: nothing rolls back by surprise later
            code, out = await cli(
                demo, "rollback", "safe", "--wait", "--timeout", "0", "--batch-size", "1", "--pause", "4"
            )
            assert code == 1 and "no process finished it within 0s" in out
            assert await deploy.read_request(manager) is None
        finally:
            await manager.close()


async def _finished(manager: Any, request: deploy.DeployRequest) -> bool:
    return not await deploy.unfinished(manager, request)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.2)


async def test_an_offline_rollback_after_a_kill_is_not_undone_by_the_resumed_lavalink_session(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=2, extra_config=DEPLOY_CONFIG) as demo:
        tagged = await play_and_prepare(demo, "before-crash")
        await change_everything(demo)
        demo.bot.kill()  # Lavalink keeps its session, whose players play the changed state, for resuming
        await demo.bot.wait()
        # the dead process is still announced for a few seconds: --force says the operator knows it is gone
        code, out = await cli(demo, "rollback", "before-crash", "--offline", "--force")
        assert code == 0, out
        await demo.start_bot()
        await demo.wait_restored(2)
        await asyncio.sleep(0.5)
        assert volumes(demo) == tagged  # played from the rewritten records, not adopted from the old session
        assert not [line for line in demo.bot.lines_since_start() if "adopted from the resumed Lavalink" in line]


async def test_a_forced_rollback_stops_the_one_it_replaces(
    scenario: Callable[..., AsyncIterator[DemoScenario]],
) -> None:
    async with scenario(guilds=2, extra_config=DEPLOY_CONFIG) as demo:
        await play_and_prepare(demo, "first")
        for index in range(2):
            await demo.command(index, "volume", value=77)
        await demo.wait_saved()
        code, out = await cli(demo, "prepare", "--tag", "second")  # every guild at volume 77
        assert code == 0, out
        await change_everything(demo)
        code, out = await cli(demo, "rollback", "first", "--batch-size", "1", "--pause", "4")
        assert code == 0, out
        await asyncio.sleep(1.5)  # the first batch of "first" is done; its second waits for the pause
        code, out = await cli(demo, "rollback", "second", "--force", "--wait", "--pause", "0")
        assert code == 0, out
        await asyncio.sleep(5)  # past the replaced request's pause: it stopped, and did not run its batch 2
        assert set(volumes(demo).values()) == {77}
        assert any("was withdrawn or replaced; stopping after 1 of 2" in line for line in demo.bot.lines_since_start())
