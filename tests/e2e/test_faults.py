"""Faults a running bot meets, end to end (real discord.py + wavelink through the fakes).

Configuration problems are not damage: a record this process is not configured to read (a key that is
not configured) is skipped with that reason, kept where it is, reported in one summary line, and
restored by a later start that has the key.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from conftest import StartBot, default_settings

from sonora_cog.config import EncryptionSettings, Secret, Settings
from sonora_cog.keyring import Keyring


def with_key(settings: Settings, key: str, *old: str) -> Settings:
    return dataclasses.replace(
        settings,
        encryption=EncryptionSettings(enabled=True),
        encryption_key=Secret(key),
        old_encryption_keys=tuple(Secret(k) for k in old),
    )


async def test_a_wrong_key_skips_and_keeps_every_record_until_the_right_key_is_back(
    start_bot: StartBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_a, key_b = Keyring.generate_key_text(), Keyring.generate_key_text()
    base = default_settings(tmp_path / "sonora")
    first = await start_bot(settings=with_key(base, key_a))
    await first.play("Clair de Lune")
    await first.play("Boléro", guild=first.world.other.guild, user=first.world.admin)
    await first.live_record(lambda s: s.queue.current is not None)
    await first.stop()  # graceful: every live record written, encrypted with key A

    caplog.set_level(logging.INFO)
    second = await start_bot(settings=with_key(base, key_b))  # the operator put the wrong key in
    await second.wait_for(lambda: "startup restore finished" in caplog.text)
    assert "skipped (its live record is encrypted with a key that is not configured (key id" in caplog.text
    summary = [r.getMessage() for r in caplog.records if "live record(s) are encrypted" in r.getMessage()]
    assert len(summary) == 1 and summary[0].startswith("2 live record(s)")
    assert key_a not in caplog.text and key_b not in caplog.text  # key ids only, never keys
    quarantine = tmp_path / "sonora" / "quarantine"
    assert not quarantine.exists() or not any(quarantine.iterdir())  # kept where they are
    assert sorted(p.name for p in (tmp_path / "sonora" / "live").iterdir()) == sorted(
        f"{g}.snr" for g in (first.guild.id, first.world.other.guild.id)
    )
    await second.stop()

    caplog.clear()
    third = await start_bot(settings=with_key(base, key_b, key_a))  # key A back, as an old key
    await third.wait_for(lambda: "startup restore finished: 2 restored" in caplog.text, timeout=20)
    player = third.lavalink_player()
    assert player is not None and player.track is not None and player.track["info"]["title"] == "Clair de Lune"


async def test_a_hostile_live_record_never_stops_the_other_guilds_restore(
    start_bot: StartBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One guild's record is valid on the outside (checksums right) around JSON the writer could never
    # produce (300 levels of nesting in its extras): it used to kill the whole startup restore.

    import orjson
    import xxhash

    from sonora_cog.codec import Codec
    from sonora_cog.manager import SessionManager
    from sonora_cog.meta import SnapshotKind
    from sonora_cog.store.filesystem import FilesystemStore

    base = default_settings(tmp_path / "sonora")
    first = await start_bot(settings=base)
    await first.play("Clair de Lune")
    await first.play("Boléro", guild=first.world.other.guild, user=first.world.admin)
    state = await first.live_record(lambda s: s.queue.current is not None)
    await first.stop()

    text = orjson.dumps(state.to_json()).decode()
    hostile = text.replace('"extras":{', '"extras":{"deep":' + "[" * 300 + "]" * 300 + ",", 1).encode()
    digest = xxhash.xxh3_128_digest(hostile)
    meta = dataclasses.replace(
        SessionManager(base)._meta_for(dataclasses.replace(state, kind=SnapshotKind.live), "live"),
        content_hash=digest.hex(),
    )
    store = FilesystemStore(base.storage.path)
    await store.put_live(state.guild_id, Codec()._seal(hostile, digest, meta))
    await store.close()

    caplog.set_level(logging.INFO)
    second = await start_bot(settings=base)
    await second.wait_for(lambda: "startup restore finished" in caplog.text, timeout=20)
    assert "startup restore finished: 1 restored, 1 skipped or failed" in caplog.text
    assert "extras: nested too deep to be written back" in caplog.text
    other = second.lavalink_player(second.world.other.guild.id)
    assert other is not None and other.track is not None and other.track["info"]["title"] == "Boléro"
    assert list((tmp_path / "sonora" / "quarantine").glob("*.snr"))  # the hostile one moved aside, not lost
