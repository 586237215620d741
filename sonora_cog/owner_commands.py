"""What the owner-only text commands (``sonora-deploy``, ``sonora-nodes``) share: the owner check, the
replies to errors, and fitting a list of lines into one Discord message.

.. versionadded:: 0.4
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from discord.ext import commands

if TYPE_CHECKING:
    from .cog import SonoraCog

__all__ = ("OwnerCommands", "fit_lines")


def fit_lines(lines: Sequence[str], limit: int) -> tuple[str, str]:
    """As many whole ``lines`` as fit in ``limit`` characters, and what to say about the rest."""
    body, shown = "", 0
    for line in lines:
        if len(body) + len(line) + 1 > limit:
            break
        body += line + "\n"
        shown += 1
    more = f"\n… and {len(lines) - shown} more lines" if shown < len(lines) else ""
    return body, more


class OwnerCommands(commands.Cog):
    """Base of an owner-only command group: anyone else is told so, a usage error gets the usage line.

    Subclasses set :attr:`command` (the group's name) and :attr:`usage`.
    """

    command: ClassVar[str]
    usage: ClassVar[str]

    def __init__(self, cog: SonoraCog) -> None:
        self.cog = cog

    async def cog_check(self, ctx: commands.Context[commands.Bot]) -> bool:  # type: ignore[override]
        if not await ctx.bot.is_owner(ctx.author):
            raise commands.NotOwner(f"only the bot's owner can run {self.command}")
        return True

    async def cog_command_error(self, ctx: commands.Context[commands.Bot], error: Exception) -> None:  # type: ignore[override]
        if isinstance(error, commands.NotOwner):
            await ctx.send(f"only the bot's owner can run {self.command}")
        elif isinstance(error, commands.UserInputError):
            await ctx.send(f"{error} ({self.usage})")
        else:
            raise error
