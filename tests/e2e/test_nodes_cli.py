"""Draining a Lavalink node through the store, with a real bot in this process and two FakeLavalink nodes:
``python -m sonora_cog nodes drain`` (its ``main``, against the bot's store) → the bot's poll moves every
player to the other node → ``nodes status`` shows none left → ``nodes undrain`` opens the node again; and
the owner-only ``sonora-nodes`` command."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import wavelink
from conftest import RunningBot, StartBot

from sonora_cog import cli, node_control
from sonora_cog.config import DeploySettings, FailoverSettings, SnapshotSettings
from sonora_cog.errors import StoreError
from sonora_cog.manager import SessionManager
from sonora_cog.testing.fake_lavalink import FakeLavalink


@pytest_asyncio.fixture
async def second_lavalink() -> AsyncIterator[FakeLavalink]:
    async with FakeLavalink(password="youshallnotpass", player_update_interval=5.0) as lavalink:
        yield lavalink


async def two_nodes(start_bot: StartBot, second: FakeLavalink, *, owner_command: bool = False) -> RunningBot:
    return await start_bot(
        more_nodes=[second],
        snapshots=SnapshotSettings(debounce=0.05, auto_enabled=False),
        deploy=DeploySettings(poll_interval=0.2),
        failover=FailoverSettings(drain_batch_size=1, drain_pause=0, owner_command=owner_command),
    )


def identifiers(running: RunningBot) -> tuple[str, str]:
    """Node A (the ``fake_lavalink`` one) and node B."""
    assert running._node is not None
    a = running._node.identifier
    [b] = [n for n in wavelink.Pool.nodes if n != a]
    return a, b


async def everyone_plays_on_a(running: RunningBot) -> list[int]:
    """Both guilds play, on node A only (B is drained while they join, then opened again)."""
    a, b = identifiers(running)
    await running.cog.drain_node(b)  # nothing on it yet: only new players are kept off it
    other = running.world.other.guild
    await running.play("clair de lune")
    await running.play("paper boats", guild=other)
    guilds = [running.guild.id, other.id]
    for guild_id in guilds:
        player = running.player(guild_id)
        assert player is not None and player.node.identifier == a
    running.cog.undrain_node(b)
    assert running.cog.owner.nodes.drained == frozenset()
    return guilds


async def run_cli(*args: str) -> int:
    """``python -m sonora_cog`` in a thread (its own event loop), the bot's loop going on meanwhile."""
    return await asyncio.to_thread(cli.main, list(args))


async def test_a_drain_written_to_the_store_moves_every_player_to_the_other_node(
    second_lavalink: FakeLavalink, start_bot: StartBot, capsys: pytest.CaptureFixture[str]
) -> None:  # second_lavalink first: it stops after the bot
    running = await two_nodes(start_bot, second_lavalink)
    a, b = identifiers(running)
    guilds = await everyone_plays_on_a(running)
    played = {g: running.lavalink.player(g).track["info"]["title"] for g in guilds}  # type: ignore[union-attr,index]
    store = running.settings.storage.path
    await running.wait_for(lambda: all(second_lavalink.player(g) is None for g in guilds))
    capsys.readouterr()

    assert await run_cli("nodes", "drain", a, "--store", store, "--wait", "--timeout", "30") == 0
    out = capsys.readouterr().out
    assert f"node {a}: 0 player(s) left in 0 process(es)" in out

    for guild_id in guilds:
        player = running.player(guild_id)
        assert player is not None and player.node.identifier == b, guild_id
        moved = second_lavalink.player(guild_id)
        assert moved is not None and moved.track is not None, guild_id  # it plays on node B
        assert moved.track["info"]["title"] == played[guild_id]
        assert running.lavalink.player(guild_id) is None, guild_id  # and nothing is left on node A
    assert a in running.cog.owner.nodes.drained

    assert await run_cli("nodes", "status", "--store", store, "--json") == 0
    status = {n["identifier"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}
    assert status[a]["drained"] and status[a]["players"] == 0
    assert status[b]["players"] == 2 and not status[b]["drained"]
    assert [p["status"] for p in status[a]["processes"]] == ["connected"]

    assert await run_cli("nodes", "undrain", a, "--store", store) == 0
    await running.wait_for(lambda: a not in running.cog.owner.nodes.drained)
    assert await node_control.read_drained(running.cog.manager) == {}
    for guild_id in guilds:  # players do not move back
        player = running.player(guild_id)
        assert player is not None and player.node.identifier == b


async def test_the_owner_command_drains_here_and_through_the_store_and_the_poll_does_not_drain_again(
    second_lavalink: FakeLavalink, start_bot: StartBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await two_nodes(start_bot, second_lavalink, owner_command=True)
    a, b = identifiers(running)
    guilds = await everyone_plays_on_a(running)
    drains: list[str] = []
    drain_node = running.cog.drain_node

    async def counted(identifier: str, **options: object) -> object:
        drains.append(identifier)
        return await drain_node(identifier, **options)  # type: ignore[arg-type]

    running.cog.drain_node = counted  # type: ignore[method-assign]
    polls: list[float] = []
    read_drained = node_control.read_drained

    async def counted_read(manager: object) -> object:
        polls.append(asyncio.get_running_loop().time())
        return await read_drained(manager)  # type: ignore[arg-type]

    monkeypatch.setattr(node_control, "read_drained", counted_read)

    fake, world = running.fake, running.world.world
    mention = f"<@{fake.bot_user.id}>"
    owner = world.user

    async def say(text: str, reply: str) -> str:
        await fake.send_user_message(world.guild.id, world.text.id, owner.id, f"{mention} {text}")
        return (await fake.wait_for_message(world.text.id, lambda m: reply in m.content)).content

    assert "only the bot's owner" in await say(f"sonora-nodes drain {a}", "owner")
    assert a not in running.cog.owner.nodes.drained
    fake.owner_id = owner.id
    running.bot.owner_id = None

    assert "no Lavalink node is named 'nope'" in await say("sonora-nodes drain nope", "drain refused")
    assert "nope" not in await read_drained(running.cog.manager)  # nothing written for a node that is not there
    answer = await say(f"sonora-nodes drain {a}", "moved")
    assert f"node {a}: moved 2 of 2 player(s)" in answer and "the other processes drain it too" in answer
    entry = (await read_drained(running.cog.manager))[a]
    assert entry.by.startswith("owner ")
    for guild_id in guilds:
        player = running.player(guild_id)
        assert player is not None and player.node.identifier == b

    seen = len(polls)
    await running.wait_for(lambda: len(polls) >= seen + 3)  # three polls that read the record listing A
    assert drains == [a]  # the owner's drain only: the poll knows it is done here

    status = await say("sonora-nodes status", "process(es)")
    assert f"{a}  drained by owner" in status and "0 player(s)  drained here" in status
    assert f"{b}  not drained" in status and "2 player(s)" in status

    assert "takes new players again, in every process" in await say(f"sonora-nodes undrain {a}", "new players")
    assert a not in running.cog.owner.nodes.drained and await read_drained(running.cog.manager) == {}
    seen = len(polls)
    await running.wait_for(lambda: len(polls) >= seen + 2)
    assert a not in running.cog.owner.nodes.drained and drains == [a]


async def test_a_store_that_fails_is_one_warning_the_poll_goes_on_and_a_stop_withdraws_the_view(
    second_lavalink: FakeLavalink,
    start_bot: StartBot,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = await two_nodes(start_bot, second_lavalink)
    a, b = identifiers(running)
    guilds = await everyone_plays_on_a(running)
    manager = running.cog.manager
    await running.wait_for(lambda: _players_in_view(manager, a, 2))  # the view is published
    failures: list[str] = []
    get_aux = manager.store.get_aux

    async def failing_get_aux(key: str) -> bytes | None:
        if key == node_control.DRAINED_KEY:
            failures.append(key)
            raise StoreError("disk on fire")
        return await get_aux(key)

    caplog.set_level(logging.INFO, logger="sonora_cog.node_controller")
    monkeypatch.setattr(manager.store, "get_aux", failing_get_aux)
    await running.wait_for(lambda: len(failures) >= 3)
    warnings = [r for r in caplog.records if r.name == "sonora_cog.node_controller" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "disk on fire" in warnings[0].getMessage()  # once per outage, not per poll

    operator = SessionManager(running.settings)  # as the CLI: another manager on the same store
    try:
        await node_control.drain(operator, a, by="test")  # written while the bot's poll cannot read it
        monkeypatch.setattr(manager.store, "get_aux", get_aux)
        await running.wait_for(lambda: all(_on(running, g) == b for g in guilds), timeout=20)
        await running.wait_for(lambda: any("the store answers again" in r.getMessage() for r in caplog.records))
        await running.wait_for(lambda: _players_in_view(operator, a, 0))

        await running.stop()
        assert await node_control.read_views(operator) == []  # the stopped process's view is gone
        assert set(await node_control.read_drained(operator)) == {a}  # the drain stays for the next start
    finally:
        await operator.close()


def _on(running: RunningBot, guild_id: int) -> str | None:
    player = running.player(guild_id)
    return player.node.identifier if player is not None else None


async def _players_in_view(manager: SessionManager, node: str, players: int) -> bool:
    views = await node_control.read_views(manager)
    return len(views) == 1 and node in views[0].nodes and views[0].nodes[node].players == players


async def test_a_process_still_in_its_startup_restore_is_not_counted_as_drained(
    start_bot: StartBot, second_lavalink: FakeLavalink
) -> None:
    # While the startup restore runs, the process's players on a listed node may still grow (it adopts
    # what a resumed session plays there): its view must not say "drained" until its own drain has run,
    # or `nodes drain --wait` would say the node can be stopped.
    running = await two_nodes(start_bot, second_lavalink)
    guilds = await everyone_plays_on_a(running)
    a, _ = identifiers(running)
    restore_done: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
    running.cog._rehydration = restore_done  # type: ignore[assignment]  # a startup restore that still runs
    await node_control.drain(running.cog.manager, a, by="test")
    await running.cog.node_controller.poll()
    assert a in running.cog.owner.nodes.drained  # no new player goes there already
    view = running.cog.node_controller.view()[a]
    assert view.drained is False and view.players == len(guilds)
    restore_done.set_result([])
    await running.cog.node_controller.poll()
    await running.wait_for(lambda: running.cog.node_controller.view()[a].drained, 15)
    assert running.cog.node_controller.view()[a].players == 0
