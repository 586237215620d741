"""(f) Bytes per snapshot: indented JSON, compact JSON, and the stored record without compression,
with zstd, and with zstd + AES-256-GCM, for queues of 10, 200 and 10,000 tracks.

The state is captured from a real ``SonoraPlayer`` (current track + queue, filters, extras) whose tracks
are YouTube-like (random 11-character ids, varied titles: see ``_world.lavalink_track``), so the
compression ratio is not flattered by repetitive test data. Records are encoded with the product's
``Codec`` at the default zstd level (3); the time to encode and decode each record is reported too.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import orjson

from sonora_cog.capture import capture_state
from sonora_cog.codec import Codec
from sonora_cog.keyring import Keyring
from sonora_cog.manager import SessionManager

from ._util import ratio
from ._world import FakeBot, make_player, offline_node

__all__ = ("run_storage",)

SIZES = (10, 200, 10_000)


def _median_ms(fn: Any, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(runs), 3)


async def run_storage(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Run (f); return one row per queue size."""
    keyring = Keyring.from_text(Keyring.generate_key_text())
    codecs = {
        "record_none": Codec(compression="none"),
        "record_zstd": Codec(compression="zstd"),
        "record_zstd_aes": Codec(compression="zstd", keyring=keyring, encrypt=True),
    }
    manager = SessionManager(codec=codecs["record_none"])
    node, session = offline_node()
    rows = []
    try:
        for size in sizes:
            player = make_player(node, FakeBot(), 800_000_000_000_000_001, size)
            state = capture_state(player)
            del player
            payload = state.to_json()
            meta = manager._meta_for(state, "live")
            row: dict[str, Any] = {
                "tracks": size,
                "json_indented": len(SessionManager.export_json(state)),
                "json_compact": len(orjson.dumps(payload)),
            }
            repeat = 3 if size >= 10_000 else 20
            for name, codec in codecs.items():
                record = codec.encode(payload, meta).data
                row[name] = len(record)
                row[f"{name}_encode_ms"] = _median_ms(lambda c=codec, p=payload, m=meta: c.encode(p, m), repeat)
                row[f"{name}_decode_ms"] = _median_ms(lambda c=codec, r=record: c.decode(r), repeat)
            row["bytes_per_track_zstd"] = round(row["record_zstd"] / size, 1)
            row["ratio_indented_vs_zstd"] = ratio(row["json_indented"], row["record_zstd"])
            row["ratio_compact_vs_zstd"] = ratio(row["json_compact"], row["record_zstd"])
            row["ratio_indented_vs_zstd_aes"] = ratio(row["json_indented"], row["record_zstd_aes"])
            rows.append(row)
            await asyncio.sleep(0)
    finally:
        await node.close()
        await session.close()
    return {
        "rows": rows,
        "target": "zstd >= 5x smaller than indented JSON",
        "met": all((r["ratio_indented_vs_zstd"] or 0) >= 5 for r in rows),
    }
