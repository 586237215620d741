"""A small real music bot with sonora_cog: run it against a real Discord and a real Lavalink.

    export DISCORD_TOKEN=...                 # your bot's token
    export LAVALINK_URI=http://127.0.0.1:2333
    export LAVALINK_PASSWORD=youshallnotpass
    python examples/bot.py

Commands: /play /skip /queue /pause /resume /stop /volume /filter /loop /autoplay /note, plus sonora_cog's
/snapshot group. Kill it at any moment (even ``kill -9``) and start it again: every guild's player
comes back where it was.

The bot is :mod:`sonora_cog.testing.music_bot` — the very code the demo and the end-to-end tests
run against the fakes — so what you run here is what the tests prove.
"""

from __future__ import annotations

import os

from sonora_cog.testing.music_bot import main

if __name__ == "__main__":
    if os.environ.get("FAKE_DISCORD_URL"):
        raise SystemExit("examples/bot.py is for a real Discord; unset FAKE_DISCORD_URL (or run the demo)")
    main()
