"""The owner-only text command ``sonora-deploy`` (``[deploy] owner_command = true``).

``<prefix>sonora-deploy prepare [tag]``, ``<prefix>sonora-deploy rollback <tag> [batch_size] [pause]``,
``<prefix>sonora-deploy status <tag>``: the same as ``cog.deploy`` and the CLI, for the bot's owner only
(``commands.is_owner``; a mention prefix works without the message content intent).

.. versionadded:: 0.3
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from discord.ext import commands

from .deploy import GuildDeployStatus, status
from .errors import SonoraError
from .owner_commands import OwnerCommands, fit_lines

__all__ = ("DeployCommands",)

#: Discord's message limit, less the code block.
_LIMIT = 1900


def summary(results: Sequence[GuildDeployStatus]) -> str:
    """A short report: counts per step, then one line per guild (failures first), cut to fit a message."""
    counts = Counter(r.step.value for r in results)
    head = ", ".join(f"{n} {step}" for step, n in sorted(counts.items())) or "no guilds"
    lines = [
        f"{r.guild_id}  {r.step.value}" + (f"  ({r.why})" if r.why else "")
        for r in sorted(results, key=lambda r: (not r.step.failed, r.guild_id))
    ]
    body, more = fit_lines(lines, _LIMIT)
    return f"{head}\n```\n{body or '-'}\n```{more}"


class DeployCommands(OwnerCommands, name="SonoraDeploy"):
    """``sonora-deploy``: deploy tags and rollbacks from Discord, for the bot's owner."""

    command = "sonora-deploy"
    usage = "usage: sonora-deploy prepare [tag] | rollback <tag> [batch_size] [pause] | status <tag>"

    @commands.group(name="sonora-deploy", invoke_without_command=True)
    async def group(self, ctx: commands.Context[commands.Bot]) -> None:
        """Deploy tags: prepare, rollback, status."""
        await ctx.send("usage: sonora-deploy prepare [tag] | rollback <tag> [batch_size] [pause] | status <tag>")

    @group.command(name="prepare")  # type: ignore[arg-type]  # mypy cannot pick from discord.py's union of callables
    async def prepare(self, ctx: commands.Context[commands.Bot], tag: str | None = None) -> None:
        """Snapshot every guild under a deploy tag."""
        try:
            results = await self.cog.deploy.prepare(tag)
        except SonoraError as exc:
            await ctx.send(f"prepare refused: {exc}")
            return
        tagged = {r.snapshot_id for r in results}
        await ctx.send(f"deploy tag prepared ({len(tagged - {None})} snapshots): " + summary(results))

    @group.command(name="rollback")  # type: ignore[arg-type]  # mypy cannot pick from discord.py's union of callables
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

    @group.command(name="status")  # type: ignore[arg-type]  # mypy cannot pick from discord.py's union of callables
    async def status(self, ctx: commands.Context[commands.Bot], tag: str) -> None:
        """Each guild's step in a deploy tag."""
        try:
            results = await status(self.cog.manager, tag)
        except SonoraError as exc:
            await ctx.send(f"status refused: {exc}")
            return
        await ctx.send(f"{tag}: " + summary(results))
