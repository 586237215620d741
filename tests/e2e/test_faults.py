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
