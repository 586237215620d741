"""The owner-only text command ``sonora-nodes`` (``[failover] owner_command = true``).

``<prefix>sonora-nodes drain <node>``, ``<prefix>sonora-nodes undrain <node>``, ``<prefix>sonora-nodes status``:
the same as ``python -m sonora_cog nodes``, for the bot's owner only (``commands.is_owner``; a mention prefix
works without the message content intent). ``drain`` moves this process's players off the node at once and
lists the node in the store, so every other process drains it too.

.. versionadded:: 0.4
"""

from __future__ import annotations

from collections.abc import Sequence

import discord
from discord.ext import commands
from discord.utils import escape_markdown

from .deploy import process_name
from .errors import SonoraError
from .failover import DrainReport, node_named
from .node_control import NodeSummary, validate_identifier
from .owner_commands import OwnerCommands, fit_lines

__all__ = ("NodeCommands",)

#: Discord's message limit (2,000), less the head line, the code block and the "… more lines" line.
_LIMIT = 1800
_USAGE = "usage: sonora-nodes drain <node> | undrain <node> | status"


async def _say(ctx: commands.Context[commands.Bot], text: str) -> None:
    """Reply without pinging anyone (node names are free text)."""
    await ctx.send(text, allowed_mentions=discord.AllowedMentions.none())


def drain_summary(report: DrainReport) -> str:
    """One line: how many players moved, and the guilds left on the node."""
    if not report.reports:
        return f"node {report.node}: no player of this process was on it"
    left = report.left
    line = f"node {report.node}: moved {report.moved} of {len(report.reports)} player(s)"
    if left:
        shown = ", ".join(map(str, left[:20])) + (f" … and {len(left) - 20} more" if len(left) > 20 else "")
        line += f"; left on it (no other node took them): {shown}"
    return line


def status_table(nodes: Sequence[NodeSummary], processes: Sequence[str]) -> str:
    """Every node of every running process as a code block, cut to fit a message."""
    lines = []
    for node in nodes:
        drained = f"drained by {node.drained.by}" if node.drained else "not drained"
        lines.append(f"{node.identifier}  {drained}" + ("" if node.known else "  (no running process has it)"))
        lines += [
            f"  {p.process}  {p.state.value}  {p.players} player(s)" + ("  drained here" if p.drained else "")
            for p in node.processes
        ]
    body, more = fit_lines(lines, _LIMIT)
    names = ", ".join(processes)
    names = names if len(names) <= 60 else names[:59] + "…"  # the message's room is for the nodes
    head = f"{len(processes)} process(es): {names}" if processes else "no node view in the store"
    return f"{escape_markdown(head)}\n```\n{body.rstrip().replace('`', chr(0x2035)) or '-'}\n```{more}"


class NodeCommands(OwnerCommands, name="SonoraNodes"):
    """``sonora-nodes``: drain and undrain Lavalink nodes from Discord, for the bot's owner."""

    command = "sonora-nodes"
    usage = _USAGE

    @commands.group(name="sonora-nodes", invoke_without_command=True)
    async def group(self, ctx: commands.Context[commands.Bot]) -> None:
        """Lavalink nodes: drain, undrain, status."""
        await ctx.send(_USAGE)

    @group.command(name="drain")  # type: ignore[arg-type]  # mypy cannot pick from discord.py's union of callables
    async def drain(self, ctx: commands.Context[commands.Bot], node: str) -> None:
        """Move every player off a node, here and in every other process; it takes no new ones."""
        try:
            node_named(validate_identifier(node))  # refused before anything is said or written
            await _say(ctx, f"draining node {escape_markdown(node)}…")
            report, problem = await self.cog.node_controller.drain(node, by=f"owner {ctx.author} on {process_name()}")
        except SonoraError as exc:  # NodeNotFound lists the nodes there are
            await _say(ctx, f"drain refused: {escape_markdown(str(exc))}")
            return
        told = (
            (f"; the other processes were not told: the store could not be written ({escape_markdown(problem)})")
            if problem
            else "; the other processes drain it too"
        )
        await _say(ctx, escape_markdown(drain_summary(report)) + told)

    @group.command(name="undrain")  # type: ignore[arg-type]  # mypy cannot pick from discord.py's union of callables
    async def undrain(self, ctx: commands.Context[commands.Bot], node: str) -> None:
        """Let a drained node take new players again (players do not move back)."""
        shown = escape_markdown(node)
        try:
            was, problem = await self.cog.node_controller.undrain(node)
        except SonoraError as exc:
            await _say(ctx, f"undrain refused: {escape_markdown(str(exc))}")
            return
        if problem:
            await _say(
                ctx,
                f"node {shown} takes new players here again; the store could not be written, so the "
                f"other processes keep it drained ({escape_markdown(problem)})",
            )
        elif was:
            await _say(ctx, f"node {shown} takes new players again, in every process (players do not move back)")
        else:
            await _say(ctx, f"node {shown} was not drained; nothing changed")

    @group.command(name="status")  # type: ignore[arg-type]  # mypy cannot pick from discord.py's union of callables
    async def status(self, ctx: commands.Context[commands.Bot]) -> None:
        """Every node of every running process, and the drained ones."""
        try:
            report = await self.cog.node_controller.status()
        except SonoraError as exc:
            await _say(ctx, f"status refused: {escape_markdown(str(exc))}")
            return
        await _say(ctx, status_table(report.nodes, report.processes))
