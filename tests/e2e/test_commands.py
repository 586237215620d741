"""``/snapshot`` end to end: real discord.py, real wavelink and sonora_cog, through FakeDiscord and FakeLavalink.

The bot runs in this process (see ``conftest.py``). Commands are sent as a member would send them;
the answers are read back from FakeDiscord, the player's state from FakeLavalink.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import MusicWorld, RunningBot, StartBot
from factories import ManualClock

from sonora_cog.commands import GENERIC_ERROR, SnapshotCommands
from sonora_cog.config import CommandSettings, SnapshotSettings
from sonora_cog.errors import RestoreInProgress, StoreError
from sonora_cog.meta import SnapshotKind
from sonora_cog.session import Phase
from sonora_cog.testing.fake_discord import CommandNotAvailable
from sonora_cog.testing.fake_discord_interactions import FakeInteraction
from sonora_cog.testing.fake_discord_models import FakeMessage

ID_RE = re.compile(r"\d{8}T\d{9}-[0-9a-f]{6}")
NO_SUCH = "There is no snapshot"


def assert_sentence(message: FakeMessage, *fragments: str) -> None:
    """An error answer: ephemeral, one plain sentence, no embed, no traceback."""
    assert message.ephemeral, message
    assert message.embeds == [], message.embeds
    text = message.content
    assert text.endswith("."), text
    assert "\n" not in text and "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def embed_of(message: FakeMessage) -> dict[str, Any]:
    assert message.ephemeral, message
    assert message.embeds, message.content
    return message.embeds[0]


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed.get("fields", [])}


def buttons(message: FakeMessage) -> dict[str, dict[str, Any]]:
    return {c["custom_id"]: c for row in message.components for c in row.get("components", [])}


async def ask(
    running: RunningBot, subcommand: str, options: dict[str, Any] | None = None, **kwargs: Any
) -> FakeMessage:
    return await running.answer(await running.snapshot(subcommand, options, **kwargs))


async def create(running: RunningBot, label: str | None = None, **kwargs: Any) -> str:
    message = await ask(running, "create", {"label": label} if label else None, **kwargs)
    embed = embed_of(message)
    assert embed["title"] == "Snapshot saved"
    found = ID_RE.search(embed["description"])
    assert found is not None
    return found.group(0)


async def wait_title(running: RunningBot, message: FakeMessage, *titles: str) -> dict[str, Any]:
    await running.wait_for(lambda: message.embeds and message.embeds[0].get("title") in titles)
    return message.embeds[0]


async def autocomplete(running: RunningBot, subcommand: str, typed: str, **kwargs: Any) -> list[dict[str, Any]]:
    target = kwargs.pop("guild", running.guild)
    user = kwargs.pop("user", running.world.admin)
    interaction = await running.fake.send_autocomplete(
        target.id, user.id, "snapshot", subcommand, {"snapshot": typed}, focused="snapshot"
    )
    answer = await interaction.wait_response()
    assert answer.type == 8
    return answer.choices


async def music(running: RunningBot, name: str, options: dict[str, Any] | None = None) -> str:
    interaction = await running.slash(name, None, options, user=running.world.alice)
    return (await interaction.wait_message()).content


async def titles(running: RunningBot) -> tuple[str | None, list[str]]:
    player = running.player()
    assert player is not None
    return (player.current.title if player.current else None), [t.title for t in player.queue]


# -- registration and permission ----------------------------------------------------------------------


async def test_group_is_synced_guild_only_with_manage_server_default(running_bot: RunningBot) -> None:
    synced = next(c for c in running_bot.fake.synced_commands if c["name"] == "snapshot")
    assert int(synced["default_member_permissions"]) == 1 << 5  # MANAGE_GUILD
    assert synced["contexts"] == [0] or synced.get("dm_permission") is False
    subcommands = {o["name"] for o in synced["options"]}
    assert subcommands == {"create", "list", "info", "restore", "delete", "status", "export", "import"}
    restore = next(o for o in synced["options"] if o["name"] == "restore")
    snapshot, parts = restore["options"]
    assert snapshot["autocomplete"] is True
    assert [c["value"] for c in parts["choices"]] == ["all", "player", "queue", "filters", "autoplay"]
    group_cog = running_bot.bot.get_cog("SonoraSnapshots")
    assert isinstance(group_cog, SnapshotCommands)
    assert running_bot.bot.tree.get_command("snapshot") is group_cog.app_command


async def test_discord_does_not_deliver_snapshot_to_a_member_without_manage_server(running_bot: RunningBot) -> None:
    # The group's default_member_permissions is Manage Server: Discord keeps /snapshot out of such a
    # member's command picker, so neither the command nor its autocomplete reaches the bot.
    await running_bot.play("Clair de Lune")
    snapshot_id = await create(running_bot, "secret")
    asked = [("create", None), ("list", None), ("status", None), ("restore", {"snapshot": snapshot_id})]
    for user in (running_bot.world.member, running_bot.world.alice):
        for subcommand, options in asked:
            with pytest.raises(CommandNotAvailable, match="MANAGE_GUILD") as refused:
                await running_bot.snapshot(subcommand, options, user=user)
            assert refused.value.user_id == user.id and refused.value.command == "snapshot"
        with pytest.raises(CommandNotAvailable):
            await autocomplete(running_bot, "restore", "", user=user)
    assert len(await running_bot.cog.manager.list_snapshots(running_bot.guild.id)) == 1


async def test_the_cog_refuses_a_member_the_server_let_see_snapshot(running_bot: RunningBot) -> None:
    # A server's admins may give anyone access to /snapshot (application command permissions, Server
    # Settings > Integrations); the cog still lets only Manage Server or commands.allowed_role_ids through.
    running = running_bot
    await running.play("Clair de Lune")
    snapshot_id = await create(running, "secret")
    member = running.world.member
    await running.fake.set_command_permissions(
        running.guild.id, "snapshot", [{"id": member.id, "type": 2, "permission": True}]
    )
    asked = [("create", None), ("list", None), ("status", None), ("restore", {"snapshot": snapshot_id})]
    for subcommand, options in asked:
        assert_sentence(await ask(running, subcommand, options, user=member), "Manage Server")
    assert await autocomplete(running, "restore", "", user=member) == []
    assert len(await running.cog.manager.list_snapshots(running.guild.id)) == 1


async def test_an_allowed_role_is_accepted(start_bot: StartBot, music_world: MusicWorld) -> None:
    # The DJ role lacks Manage Server: the server's admins let it see /snapshot (what the commands
    # module's docstring asks of them), then commands.allowed_role_ids lets it through the cog's check.
    running = await start_bot(commands=CommandSettings(allowed_role_ids=(music_world.dj_role.id,)))
    await running.play("Clair de Lune")
    with pytest.raises(CommandNotAvailable):
        await running.snapshot("list", user=music_world.dj)
    await running.fake.set_command_permissions(
        running.guild.id, "snapshot", [{"id": music_world.dj_role.id, "type": 1, "permission": True}]
    )
    snapshot_id = await create(running, "by the dj", user=music_world.dj)
    choices = await autocomplete(running, "info", "", user=music_world.dj)
    assert [c["value"] for c in choices] == [snapshot_id]
    assert embed_of(await ask(running, "list", user=music_world.dj))["fields"]
    with pytest.raises(CommandNotAvailable):
        await running.snapshot("list", user=music_world.member)


# -- create / list / info / status / delete -----------------------------------------------------------


async def test_create_list_info_and_delete(running_bot: RunningBot) -> None:
    running = running_bot
    nothing = await ask(running, "create")
    assert_sentence(nothing, "Nothing is playing")

    await running.play("Clair de Lune")
    await running.play("Boléro")
    assert await music(running, "volume", {"value": 40}) == "Volume 40."
    await music(running, "pause")
    snapshot_id = await create(running, "evening set")

    listing = embed_of(await ask(running, "list"))
    assert len(listing["fields"]) == 1
    entry = listing["fields"][0]
    assert snapshot_id in entry["name"] and "evening set" in entry["name"]
    assert "manual" in entry["value"] and "2 tracks" in entry["value"] and "Clair de Lune" in entry["value"]
    assert re.search(r"\d+(\.\d)? KiB", entry["value"])
    assert listing["footer"]["text"].startswith("Page 1/1")

    info = embed_of(await ask(running, "info", {"snapshot": snapshot_id}))
    details = fields(info)
    assert info["title"] == f"Snapshot {snapshot_id}" and info["description"] == "evening set"
    assert details["Channel"] == f"<#{running.world.world.voice.id}>"
    assert details["Track"].startswith("Clair de Lune at ") and details["Track"].endswith("/ 5:01")
    assert details["Paused"] == "yes" and details["Volume"] == "40"
    assert details["Queue"] == "1 track" and details["History"] == "1 track"  # wavelink: the playing one
    assert details["Loop"] == "none" and details["Filters"] == "none" and details["Autoplay"] == "disabled"
    assert details["Kind"] == "manual" and "KiB" in details["Size"]

    deleted = embed_of(await ask(running, "delete", {"snapshot": snapshot_id}))
    assert deleted["title"] == "Snapshot deleted"
    assert await running.cog.manager.list_snapshots(running.guild.id) == []
    assert_sentence(await ask(running, "delete", {"snapshot": snapshot_id}), NO_SUCH, snapshot_id)
    assert_sentence(await ask(running, "info", {"snapshot": snapshot_id}), NO_SUCH)
    empty = embed_of(await ask(running, "list"))
    assert "No snapshots yet" in empty["description"]


async def test_label_is_validated(running_bot: RunningBot) -> None:
    await running_bot.play("Clair de Lune")
    message = await ask(running_bot, "create", {"label": "a/b"})
    assert_sentence(message, "label cannot be used")


async def test_malformed_id_is_a_sentence(running_bot: RunningBot) -> None:
    for subcommand in ("info", "restore", "delete", "export"):
        message = await ask(running_bot, subcommand, {"snapshot": "../../etc/passwd"})
        assert_sentence(message, NO_SUCH)


async def test_status(running_bot: RunningBot) -> None:
    running = running_bot
    before = fields(embed_of(await ask(running, "status")))
    assert before["Player"] == "not connected" and before["Live record"] == "none"
    assert before["Snapshots"] == "0" and before["Last checkpoint"] == "not since the bot started"
    assert "Newest" not in before

    await running.play("Clair de Lune")
    await running.wait_for(lambda: running.cog.owner.last_saved_at(running.guild.id))
    snapshot_id = await create(running)
    after = fields(embed_of(await ask(running, "status")))
    assert after["Player"].startswith("playing **Clair de Lune**")
    assert after["Live record"] == "saved" and after["Last checkpoint"].endswith("s ago")
    assert after["Unsaved changes"] in ("yes", "no") and after["Session"].startswith("live")
    assert after["Snapshots"] == "1" and snapshot_id in after["Newest"] and "manual" in after["Newest"]


async def test_status_shows_the_auto_snapshot_interval_and_why(start_bot: StartBot) -> None:
    running = await start_bot(snapshots=SnapshotSettings(debounce=0.05, auto_enabled=True))
    clock = ManualClock()
    running.cog.owner.clock = clock
    idle = fields(embed_of(await ask(running, "status")))
    assert idle["Auto snapshots"] == "every 30 min \N{EM DASH} quiet: no listeners in the voice channel"
    assert idle["Next auto snapshot"] == "once music plays here"

    await running.play("Clair de Lune")
    player = running.player()
    assert player is not None
    for volume in range(20, 33):  # 13 separate changes: busy
        await player.set_volume(volume)
        clock.advance(5)
    busy = fields(embed_of(await ask(running, "status")))
    assert busy["Auto snapshots"].startswith("every 5 min \N{EM DASH} busy: ")
    assert busy["Auto snapshots"].endswith(" changes in the last hour, 1 listener")
    assert busy["Next auto snapshot"] == "in 4 min"  # 5 min after it went live, 65 s ago
    clock.advance(300)
    due = fields(embed_of(await ask(running, "status")))
    assert due["Next auto snapshot"] == "due now (taken at the next check if anything changed)"


async def test_status_shows_a_fixed_interval_or_none(start_bot: StartBot) -> None:
    running = await start_bot(snapshots=SnapshotSettings(debounce=0.05, auto_enabled=True, auto_interval=600))
    await running.play("Clair de Lune")
    fixed = fields(embed_of(await ask(running, "status")))
    assert fixed["Auto snapshots"] == "every 10 min \N{EM DASH} fixed: snapshots.auto_interval"
    assert fixed["Next auto snapshot"] in ("in 10 min", "in 9 min")
    await running.stop()
    running = await start_bot()  # the e2e default: auto snapshots off
    off = fields(embed_of(await ask(running, "status")))
    assert off["Auto snapshots"] == "off (snapshots.auto_enabled = false)" and off["Next auto snapshot"] == "none"


async def test_list_pagination_buttons(start_bot: StartBot, music_world: MusicWorld) -> None:
    running = await start_bot(commands=CommandSettings(page_size=2))
    await running.play("Clair de Lune")
    ids = [await create(running, f"take {n}") for n in range(5)]

    message = await ask(running, "list")
    page = embed_of(message)
    assert page["footer"]["text"].startswith("Page 1/3")
    assert [ids[4] in page["fields"][0]["name"], ids[3] in page["fields"][1]["name"]] == [True, True]
    assert buttons(message)["sonora:page:previous"].get("disabled") is True
    assert not buttons(message)["sonora:page:next"].get("disabled")

    stranger = await running.fake.click_button(message, "sonora:page:next", music_world.dj.id)
    refusal = await stranger.wait_message()
    assert refusal.ephemeral and "Only the member who ran this command" in refusal.content
    assert message.embeds[0]["footer"]["text"].startswith("Page 1/3")

    for expected in ("Page 2/3", "Page 3/3"):
        click = await running.fake.click_button(message, "sonora:page:next", music_world.admin.id)
        assert (await click.wait_response()).type == 7
        assert message.embeds[0]["footer"]["text"].startswith(expected)
    assert [f["name"] for f in message.embeds[0]["fields"]] == [f"`{ids[0]}` — take 0"]
    assert buttons(message)["sonora:page:next"].get("disabled") is True
    assert not buttons(message)["sonora:page:previous"].get("disabled")
    with pytest.raises(ValueError, match="disabled"):
        await running.fake.click_button(message, "sonora:page:next", music_world.admin.id)

    back = await running.fake.click_button(message, "sonora:page:previous", music_world.admin.id)
    await back.wait_response()
    assert message.embeds[0]["footer"]["text"].startswith("Page 2/3")


async def test_list_buttons_time_out(start_bot: StartBot) -> None:
    running = await start_bot(commands=CommandSettings(page_size=1))
    await running.play("Clair de Lune")
    for n in range(2):
        await create(running, f"take {n}")
    group = running.bot.get_cog("SonoraSnapshots")
    assert isinstance(group, SnapshotCommands)
    group.page_timeout = 0.3
    message = await ask(running, "list")
    assert not buttons(message)["sonora:page:next"].get("disabled")
    await running.wait_for(lambda: all(b.get("disabled") for b in buttons(message).values()))
    assert message.embeds[0]["footer"]["text"].startswith("Page 1/2")


# -- isolation ----------------------------------------------------------------------------------------


async def test_another_guilds_snapshot_is_invisible(running_bot: RunningBot) -> None:
    running = running_bot
    other = running.world.other.guild
    await running.play("Midnight Drive", guild=other)
    foreign_id = await create(running, "theirs", guild=other)
    await running.play("Clair de Lune")
    own_id = await create(running, "ours")

    for subcommand in ("info", "restore", "delete", "export"):
        message = await ask(running, subcommand, {"snapshot": foreign_id})
        assert_sentence(message, NO_SUCH, foreign_id)
    listing = embed_of(await ask(running, "list"))
    assert [own_id in f["name"] for f in listing["fields"]] == [True]
    assert foreign_id not in json.dumps(listing)
    assert [c["value"] for c in await autocomplete(running, "info", "")] == [own_id]
    assert await autocomplete(running, "info", foreign_id) == []
    assert [c["value"] for c in await autocomplete(running, "info", "", guild=other)] == [foreign_id]
    # still there, untouched, in its own guild
    assert [m.id for m in await running.cog.manager.list_snapshots(other.id)] == [foreign_id]


async def test_autocomplete_filters_and_caps_at_25(start_bot: StartBot) -> None:
    running = await start_bot(commands=CommandSettings(page_size=25))
    await running.play("Clair de Lune")
    ids = [await create(running, f"{'party' if n % 2 else 'chill'} {n}") for n in range(27)]
    everything = await autocomplete(running, "restore", "")
    assert len(everything) == 25
    assert everything[0]["value"] == ids[-1]  # newest first
    first = everything[0]["name"]
    assert ids[-1] in first and "manual" in first and "ago" in first and "chill 26" in first
    assert all(len(c["name"]) <= 100 for c in everything)
    party = await autocomplete(running, "export", "PARTY")
    assert len(party) == 13 and all("party" in c["name"] for c in party)
    assert [c["value"] for c in await autocomplete(running, "delete", ids[3][-6:])] == [ids[3]]


# -- restore ------------------------------------------------------------------------------------------


async def test_restore_when_nothing_plays_needs_no_confirmation(running_bot: RunningBot) -> None:
    running = running_bot
    await running.play("Clair de Lune")
    await running.play("Boléro")
    await music(running, "volume", {"value": 35})
    snapshot_id = await create(running, "before stop")
    assert await music(running, "stop") == "Stopped. Bye!"
    await running.wait_for(lambda: running.player() is None)

    message = await ask(running, "restore", {"snapshot": snapshot_id})
    report = await wait_title(running, message, "Snapshot restored", "Restore failed", "Restore skipped")
    assert report["title"] == "Snapshot restored", report
    assert message.components == []
    assert fields(report)["Track"] == "Clair de Lune" and fields(report)["Queue"] == "1 track"
    lavalink = running.lavalink_player()
    assert lavalink is not None
    assert lavalink.track is not None and lavalink.track["info"]["title"] == "Clair de Lune"
    assert lavalink.volume == 35 and not lavalink.paused
    assert running.fake.bot_voice_channel(running.guild.id) == running.world.world.voice.id
    kinds = [m.kind for m in await running.cog.manager.list_snapshots(running.guild.id)]
    assert SnapshotKind.pre_restore not in kinds  # nothing was playing: nothing to keep


async def _start_over(running: RunningBot, query: str, volume: int) -> None:
    """/stop, then /play ``query`` in a fresh session at ``volume``."""
    assert await music(running, "stop") == "Stopped. Bye!"
    await running.wait_for(lambda: running.player() is None)
    await running.play(query)
    assert await music(running, "volume", {"value": volume}) == f"Volume {volume}."


async def _change_what_plays(running: RunningBot) -> str:
    """Snapshot Clair de Lune (+ Boléro queued, volume 40), then play Boléro alone at volume 70."""
    await running.play("Clair de Lune")
    await running.play("Boléro")
    await music(running, "volume", {"value": 40})
    snapshot_id = await create(running, "the good one")
    await _start_over(running, "Boléro", 70)
    return snapshot_id


async def _ask_restore(running: RunningBot, snapshot_id: str, **options: Any) -> FakeMessage:
    message = await ask(running, "restore", {"snapshot": snapshot_id, **options})
    prompt = embed_of(message)
    assert prompt["title"] == "Replace what is playing?"
    assert "Boléro" in prompt["description"] and "pre-restore" in prompt["description"]
    assert set(buttons(message)) == {"sonora:confirm:yes", "sonora:confirm:no"}
    return message


async def test_restore_while_playing_asks_and_keeps_a_pre_restore_snapshot(running_bot: RunningBot) -> None:
    running = running_bot
    snapshot_id = await _change_what_plays(running)
    message = await _ask_restore(running, snapshot_id)

    stranger: FakeInteraction = await running.fake.click_button(message, "sonora:confirm:yes", running.world.dj.id)
    assert "Only the member who ran this command" in (await stranger.wait_message()).content
    assert running.lavalink_player().track["info"]["title"] == "Boléro"  # type: ignore[union-attr]

    click = await running.fake.click_button(message, "sonora:confirm:yes", running.world.admin.id)
    assert (await click.wait_response()).type == 7
    report = await wait_title(running, message, "Snapshot restored", "Restore failed", "Restore rolled back")
    assert report["title"] == "Snapshot restored", report
    assert message.components == []

    lavalink = running.lavalink_player()
    assert lavalink is not None and lavalink.track is not None
    assert lavalink.track["info"]["title"] == "Clair de Lune" and lavalink.volume == 40
    assert await titles(running) == ("Clair de Lune", ["Boléro"])

    metas = await running.cog.manager.list_snapshots(running.guild.id)
    backup = next(m for m in metas if m.kind is SnapshotKind.pre_restore)
    assert backup.current_title == "Boléro" and backup.id in report["footer"]["text"]
    kept = await running.cog.manager.load_snapshot(backup.id, running.guild.id)
    assert kept.player.volume == 70


async def test_restore_cancel_changes_nothing(running_bot: RunningBot) -> None:
    running = running_bot
    snapshot_id = await _change_what_plays(running)
    message = await _ask_restore(running, snapshot_id)
    click = await running.fake.click_button(message, "sonora:confirm:no", running.world.admin.id)
    assert (await click.wait_response()).type == 7
    assert message.embeds[0]["title"] == "Restore cancelled" and message.components == []
    lavalink = running.lavalink_player()
    assert lavalink is not None and lavalink.track is not None
    assert lavalink.track["info"]["title"] == "Boléro" and lavalink.volume == 70
    kinds = [m.kind for m in await running.cog.manager.list_snapshots(running.guild.id)]
    assert kinds == [SnapshotKind.manual]


async def test_restore_confirmation_times_out(start_bot: StartBot) -> None:
    running = await start_bot(commands=CommandSettings(confirm_timeout=0.4))
    snapshot_id = await _change_what_plays(running)
    message = await _ask_restore(running, snapshot_id)
    embed = await wait_title(running, message, "Restore not confirmed")
    assert "nothing was changed" in embed["description"] and message.components == []
    assert running.lavalink_player().track["info"]["title"] == "Boléro"  # type: ignore[union-attr]


async def test_restore_only_the_queue(running_bot: RunningBot) -> None:
    running = running_bot
    await running.play("Clair de Lune")
    await running.play("Boléro")
    await running.play("Canon in D")
    snapshot_id = await create(running, "three")
    await _start_over(running, "Midnight Drive", 60)
    assert await titles(running) == ("Midnight Drive", [])

    message = await ask(running, "restore", {"snapshot": snapshot_id, "parts": "queue"})
    assert "(queue)" in embed_of(message)["description"]
    click = await running.fake.click_button(message, "sonora:confirm:yes", running.world.admin.id)
    await click.wait_response()
    report = await wait_title(running, message, "Snapshot restored", "Restore failed", "Restore rolled back")
    assert report["title"] == "Snapshot restored", report
    assert "queue" in report["description"]
    # the queue came back; what plays, and how loud, did not change
    assert await titles(running) == ("Midnight Drive", ["Boléro", "Canon in D"])
    lavalink = running.lavalink_player()
    assert lavalink is not None and lavalink.track is not None
    assert lavalink.track["info"]["title"] == "Midnight Drive" and lavalink.volume == 60


# -- export / import ----------------------------------------------------------------------------------


async def _export(running: RunningBot, snapshot_id: str, **kwargs: Any) -> bytes:
    message = await ask(running, "export", {"snapshot": snapshot_id}, **kwargs)
    assert embed_of(message)["title"] == "Snapshot exported"
    assert [f.filename for f in message.files] == [f"snapshot-{snapshot_id}.json"]
    return message.files[0].data


async def _import(running: RunningBot, name: str, data: bytes, **kwargs: Any) -> FakeMessage:
    attachment = running.fake.host_attachment(name, data, "application/json")
    return await running.answer(await running.snapshot("import", attachments={"file": attachment}, **kwargs))


async def test_export_is_plain_schema_1_json(running_bot: RunningBot) -> None:
    await running_bot.play("Clair de Lune")
    snapshot_id = await create(running_bot, "to share")
    document = json.loads(await _export(running_bot, snapshot_id))
    assert document["schema"] == 1
    assert document["guild_id"] == str(running_bot.guild.id)
    assert document["kind"] == "manual" and document["label"] == "to share"
    assert document["queue"]["current"]["info"]["title"] == "Clair de Lune"
    assert document["queue"]["current"]["encoded"] == running_bot.track("Clair de Lune")["encoded"]


async def test_import_good_duplicate_foreign_and_bad_files(running_bot: RunningBot) -> None:
    running = running_bot
    await running.play("Clair de Lune")
    data = await _export(running, await create(running, "original"))

    imported = embed_of(await _import(running, "snap.json", data))
    assert imported["title"] == "Snapshot imported"
    new_id = ID_RE.search(imported["description"]).group(0)  # type: ignore[union-attr]
    meta = next(m for m in await running.cog.manager.list_snapshots(running.guild.id) if m.id == new_id)
    assert meta.kind is SnapshotKind.imported and meta.current_title == "Clair de Lune"
    assert fields(embed_of(await ask(running, "info", {"snapshot": new_id})))["Kind"] == "import"

    assert_sentence(await _import(running, "snap.json", data), "already stored", new_id)

    other = running.world.other.guild
    await running.play("Midnight Drive", guild=other)
    foreign = await _export(running, await create(running, guild=other), guild=other)
    assert_sentence(await _import(running, "theirs.json", foreign), "belongs to another server")

    assert_sentence(await _import(running, "garbage.json", b"\x00\x01 not json"), "not a valid snapshot", "JSON")
    document = json.loads(data)
    document["player"]["volume"] = "loud"
    bad = json.dumps(document).encode()
    assert_sentence(await _import(running, "bad.json", bad), "not a valid snapshot", "`player.volume`")
    document["schema"] = 99
    assert_sentence(await _import(running, "future.json", json.dumps(document).encode()), "cannot be read")

    assert len(await running.cog.manager.list_snapshots(running.guild.id)) == 2
    assert await running.cog.manager.list_snapshots(other.id) != []


async def test_oversize_import_is_refused_before_download(running_bot: RunningBot) -> None:
    running = running_bot
    cap = running.settings.commands.import_max_bytes
    big = await _import(running, "big.json", b" " * (cap + 1))
    assert_sentence(big, "too large")
    # the size Discord announces is enough: the bytes are never fetched (here: there are none to fetch)
    attachment = running.fake.host_attachment("huge.json", b"{}")
    del running.fake.attachments[int(attachment["id"])]
    attachment["size"] = 50 * 1024 * 1024
    message = await running.answer(await running.snapshot("import", attachments={"file": attachment}))
    assert_sentence(message, "too large", "50.0 MiB")
    assert await running.cog.manager.list_snapshots(running.guild.id) == []


async def test_an_import_whose_declared_size_lies_is_read_no_further_than_the_cap(running_bot: RunningBot) -> None:
    running = running_bot
    cap = running.settings.commands.import_max_bytes
    served = b" " * (cap * 4)  # what the CDN really sends
    attachment = running.fake.host_attachment("liar.json", served, "application/json")
    attachment["size"] = 1000  # what the attachment claims
    message = await running.answer(await running.snapshot("import", attachments={"file": attachment}))
    assert_sentence(message, "too large", "declared size was 1000 B")
    assert await running.cog.manager.list_snapshots(running.guild.id) == []


# -- errors -------------------------------------------------------------------------------------------


async def test_store_failure_and_unexpected_errors_are_sentences(
    running_bot: RunningBot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    running = running_bot
    manager = running.cog.manager

    async def store_down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("connection refused")

    async def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(manager, "list_snapshots", store_down)
    assert_sentence(await ask(running, "list"), "store is not available")
    assert await autocomplete(running, "info", "") == []

    monkeypatch.setattr(manager, "list_snapshots", bug)
    with caplog.at_level(logging.ERROR, logger="sonora_cog.commands"):
        message = await ask(running, "list")
    assert message.content == GENERIC_ERROR and message.ephemeral and message.embeds == []
    logged = [r for r in caplog.records if r.name == "sonora_cog.commands" and r.exc_info]
    assert logged and str(running.guild.id) in logged[-1].getMessage()
    assert "a bug" not in message.content


async def test_restore_into_a_deleted_channel_is_skipped_with_the_reason(running_bot: RunningBot) -> None:
    running = running_bot
    await running.play("Clair de Lune")
    snapshot_id = await create(running)
    assert await music(running, "stop") == "Stopped. Bye!"
    await running.wait_for(lambda: running.player() is None)
    voice = running.world.world.voice
    await running.fake.delete_channel(running.guild.id, voice.id)
    await running.wait_for(lambda: running.discord_guild.get_channel(voice.id) is None)

    report = embed_of(await ask(running, "restore", {"snapshot": snapshot_id}))
    assert report["title"] == "Restore skipped"
    assert f"voice channel {voice.id} no longer exists" in report["description"]
    assert running.lavalink_player() is None and running.fake.bot_voice_channel(running.guild.id) is None


def damage(store: Path, snapshot_id: str) -> None:
    """Flip bits in a stored snapshot's payload; its header (and so the listing) stays intact."""
    [path] = store.rglob(f"{snapshot_id}.snr")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_a_damaged_record_is_a_sentence(running_bot: RunningBot) -> None:
    running = running_bot
    await running.play("Clair de Lune")
    snapshot_id = await create(running)
    damage(Path(running.settings.storage.path), snapshot_id)
    assert [c["value"] for c in await autocomplete(running, "info", "")] == [snapshot_id]
    for subcommand in ("info", "restore", "export"):
        assert_sentence(await ask(running, subcommand, {"snapshot": snapshot_id}), "damaged and cannot be read")
    assert running.lavalink_player().track["info"]["title"] == "Clair de Lune"  # type: ignore[union-attr]


async def test_two_confirmed_restores_at_once_run_exactly_one(running_bot: RunningBot) -> None:
    # Both members see no restore running and confirm at the same instant: the check and the
    # transition to "restoring" happen before the first await, so exactly one restores (and saves one
    # pre-restore snapshot); the other is told a restore is already running.
    running = running_bot
    snapshot_id = await _change_what_plays(running)
    first = await _ask_restore(running, snapshot_id)
    second = await _ask_restore(running, snapshot_id)
    running.fake.voice_latency = 0.3  # a restore that takes a moment, as a real one does
    clicks = await asyncio.gather(
        running.fake.click_button(first, "sonora:confirm:yes", running.world.admin.id),
        running.fake.click_button(second, "sonora:confirm:yes", running.world.admin.id),
    )
    for click in clicks:
        await click.wait_response()
    outcomes = [
        (await wait_title(running, m, "Snapshot restored", "Not restored", "Restore failed", "Restore rolled back"))
        for m in (first, second)
    ]
    assert sorted(o["title"] for o in outcomes) == ["Not restored", "Snapshot restored"], outcomes
    refused = next(o for o in outcomes if o["title"] == "Not restored")
    assert "already running" in refused["description"]
    kinds = [m.kind for m in await running.cog.manager.list_snapshots(running.guild.id)]
    assert sorted(kinds) == sorted([SnapshotKind.manual, SnapshotKind.pre_restore])  # one backup, not two
    assert await titles(running) == ("Clair de Lune", ["Boléro"])


async def test_restore_is_refused_while_a_restore_runs(running_bot: RunningBot) -> None:
    running = running_bot
    await running.play("Clair de Lune")
    snapshot_id = await create(running)
    async with running.cog.owner.restoring(running.guild.id, "a test holds it"):  # what startup does meanwhile
        assert running.cog.owner.phase(running.guild.id) is Phase.restoring
        assert_sentence(await ask(running, "restore", {"snapshot": snapshot_id}), "already running")
        with pytest.raises(RestoreInProgress):
            await running.cog.restore(
                running.discord_guild, await running.cog.manager.load_snapshot(snapshot_id, running.guild.id)
            )
    assert running.cog.owner.phase(running.guild.id) is Phase.live
    assert [m.kind for m in await running.cog.manager.list_snapshots(running.guild.id)] == [SnapshotKind.manual]
