"""The owner-only text command ``sonora-deploy`` (``[deploy] owner_command = true``).

``<prefix>sonora-deploy prepare [tag]``, ``<prefix>sonora-deploy rollback <tag> [batch_size] [pause]``,
``<prefix>sonora-deploy status <tag>``: the same as ``cog.deploy`` and the CLI, for the bot's owner only
(``commands.is_owner``; a mention prefix works without the message content intent).

.. versionadded:: 0.3
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from discord.ext import commands

from .deploy import GuildDeployStatus, status
from .errors import SonoraError

if TYPE_CHECKING:
    from .cog import SonoraCog

__all__ = ("DeployCommands",)

#: Discord's message limit, less the code block.
_LIMIT = 1900


def summary(results: Sequence[GuildDeployStatus]) -> str:
    """A short report: counts per step, then one line per guild (failures first), cut to fit a message."""
    counts = Counter(r.step.value for r in results)
    head = ", ".join(f"{n} {step}" for step, n in sorted(counts.items())) or "no guilds"
    lines = [f"{r.guild_id}  {r.step.value}" + (f"  ({r.why})" if r.why else "")
             for r in sorted(results, key=lambda r: (not r.step.failed, r.guild_id))]
    body, shown = "", 0
    for line in lines:
        if len(body) + len(line) + 1 > _LIMIT:
            break
        body += line + "\n"
        shown += 1
    more = f"\n… and {len(lines) - shown} more" if shown < len(lines) else ""
    return f"{head}\n```\n{body or '-'}\n```{more}"


class DeployCommands(commands.Cog, name="SonoraDeploy"):
    """``sonora-deploy``: deploy tags and rollbacks from Discord, for the bot's owner."""

    def __init__(self, cog: SonoraCog) -> None:
        self.cog = cog

    async def cog_check(self, ctx: commands.Context[commands.Bot]) -> bool:  # type: ignore[override]
        if not await ctx.bot.is_owner(ctx.author):
            raise commands.NotOwner("only the bot's owner can run sonora-deploy")
        return True

    async def cog_command_error(self, ctx: commands.Context[commands.Bot], error: Exception) -> None:  # type: ignore[override]
        if isinstance(error, commands.NotOwner):
            await ctx.send("only the bot's owner can run sonora-deploy")
        elif isinstance(error, commands.UserInputError):
            await ctx.send(f"{error} (usage: sonora-deploy prepare [tag] | rollback <tag> [batch_size] [pause] | "
                           "status <tag>)")
        else:
            raise error

    @commands.group(name="sonora-deploy", invoke_without_command=True)
    async def group(self, ctx: commands.Context[commands.Bot]) -> None:
        """Deploy tags: prepare, rollback, status."""
        await ctx.send("usage: sonora-deploy prepare [tag] | rollback <tag> [batch_size] [pause] | status <tag>")

    @group.command(name="prepare")
    async def prepare(self, ctx: commands.Context[commands.Bot], tag: str | None = None) -> None:
        """Snapshot every guild under a deploy tag."""
        try:
            results = await self.cog.deploy.prepare(tag)
        except SonoraError as exc:
            await ctx.send(f"prepare refused: {exc}")
            return
        tagged = {r.snapshot_id for r in results}
        await ctx.send(f"deploy tag prepared ({len(tagged - {None})} snapshots): " + summary(results))

    @group.command(name="rollback")
    async def rollback(
        self, ctx: commands.Context[commands.Bot], tag: str, batch_size: int | None = None, pause: float | None = None
    ) -> None:
        """Restore every guild this process owns from the tag's snapshots, in paced batches."""
        if (batch_size is not None and batch_size < 1) or (pause is not None and pause < 0):
            await ctx.send("batch_size must be 1 or more and pause 0 or more")
            return
        await ctx.send(f"rolling back to {tag}…")
        try:
            results = await self.cog.deploy.rollback(tag, batch_size=batch_size, pause=pause)
        except SonoraError as exc:
            await ctx.send(f"rollback refused: {exc}")
            return
        await ctx.send(f"rollback to {tag}: " + summary(results))

    @group.command(name="status")
    async def status(self, ctx: commands.Context[commands.Bot], tag: str) -> None:
        """Each guild's step in a deploy tag."""
        try:
            results = await status(self.cog.manager, tag)
        except SonoraError as exc:
            await ctx.send(f"status refused: {exc}")
            return
        await ctx.send(f"{tag}: " + summary(results))
