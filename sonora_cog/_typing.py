"""Type aliases shared by the modules that take the bot."""

from __future__ import annotations

from typing import TypeAlias

from discord.ext import commands

#: A discord.py bot, sharded in one process or not (``AutoShardedBot`` is not a subclass of ``Bot``).
AnyBot: TypeAlias = commands.Bot | commands.AutoShardedBot
