"""What the ``/snapshot`` commands show: their embeds, and the buttons to page or to confirm.

The embed builders are pure (a state or metadata in, a :class:`discord.Embed` out). Every view
answers only the member who ran the command (anyone else gets one ephemeral sentence), disables or
removes its buttons when it times out, and hands errors raised in a button callback to the error
handler it was given, so they end as the same friendly sentence a command error does (see
:meth:`~sonora_cog.commands.SnapshotCommands.on_error`).

The views know nothing about snapshots: the commands give them what to render and what to run.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import discord

from .meta import SnapshotMeta
from .model import SessionState
from .restore import ALL_PARTS, RestoreReport, RestoreStatus

__all__ = (
    "ConfirmView",
    "ErrorHandler",
    "OwnerView",
    "Paginator",
    "choice_name",
    "format_age",
    "format_ms",
    "format_size",
    "report_embed",
    "snapshot_info",
    "snapshot_page",
)

_log = logging.getLogger(__name__)

#: ``async handler(interaction, error)``: turns an error into an answer (and logs what needs logging).
ErrorHandler = Callable[[discord.Interaction, Exception], Awaitable[None]]

NOT_YOURS = "Only the member who ran this command can use these buttons."
ALREADY_ANSWERED = "This was already answered."

_STATUS_COLOURS = {
    RestoreStatus.restored: discord.Colour.green(),
    RestoreStatus.skipped: discord.Colour.orange(),
    RestoreStatus.failed: discord.Colour.red(),
    RestoreStatus.rolled_back: discord.Colour.orange(),
}
_STATUS_TITLES = {
    RestoreStatus.restored: "Snapshot restored",
    RestoreStatus.skipped: "Restore skipped",
    RestoreStatus.failed: "Restore failed",
    RestoreStatus.rolled_back: "Restore rolled back",
}


# -- what the commands show --------------------------------------------------------------------------


def format_age(created_at: float, now: float | None = None) -> str:
    """``"42 s ago"``, ``"5 min ago"``, ``"3 h ago"``, ``"2 d ago"``."""
    seconds = max(0.0, (time.time() if now is None else now) - created_at)
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86_400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86_400)} d ago"


def format_size(size: int) -> str:
    """``"512 B"``, ``"3.4 KiB"``, ``"1.2 MiB"``."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def format_ms(ms: int) -> str:
    """A position or length: ``"3:07"`` or ``"1:02:03"``."""
    seconds = max(0, ms) // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def short(text: str, limit: int = 80) -> str:
    """``text`` on one line, markdown escaped, cut to ``limit`` characters (for embeds)."""
    text = discord.utils.escape_markdown(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def plain(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (where markdown is not rendered)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def tracks_text(count: int) -> str:
    """``"1 track"``, ``"3 tracks"``."""
    return f"{count} track" + ("" if count == 1 else "s")


def choice_name(meta: SnapshotMeta, now: float | None = None) -> str:
    """What an autocomplete suggestion shows for a snapshot (at most 100 characters)."""
    parts = [meta.id, meta.kind.value, format_age(meta.created_at, now)]
    if meta.label:
        parts.append(meta.label)
    elif meta.current_title:
        parts.append(meta.current_title)
    return plain(" \N{MIDDLE DOT} ".join(parts), 100)


def parts_text(parts: Iterable[str]) -> str:
    """``"everything"``, or the restored parts in their usual order: ``"player, queue"``."""
    chosen = frozenset(parts)
    if chosen == ALL_PARTS:
        return "everything"
    return ", ".join(p for p in ("player", "queue", "filters", "autoplay") if p in chosen)


def snapshot_page(metas: Sequence[SnapshotMeta], page: int, page_size: int, now: float | None = None) -> discord.Embed:
    """The embed of one page of ``/snapshot list`` (newest first)."""
    pages = max(1, -(-len(metas) // page_size))
    embed = discord.Embed(title="Snapshots of this server", colour=discord.Colour.blurple())
    for meta in metas[page * page_size : (page + 1) * page_size]:
        name = f"`{meta.id}`" + (f" \N{EM DASH} {short(meta.label, 60)}" if meta.label else "")
        lines = [
            f"{meta.kind.value} \N{MIDDLE DOT} {format_age(meta.created_at, now)} \N{MIDDLE DOT} "
            f"{tracks_text(meta.track_count)} \N{MIDDLE DOT} {format_size(meta.size)}",
            f"Playing: {short(meta.current_title) if meta.current_title else 'nothing'}",
        ]
        embed.add_field(name=plain(name, 256), value="\n".join(lines), inline=False)
    if not metas:
        embed.description = "No snapshots yet. Take one with `/snapshot create`."
    embed.set_footer(text=f"Page {page + 1}/{pages} \N{MIDDLE DOT} {len(metas)} snapshot(s)")
    return embed


def snapshot_info(snapshot_id: str, state: SessionState, meta: SnapshotMeta | None) -> discord.Embed:
    """The embed of ``/snapshot info``."""
    embed = discord.Embed(title=f"Snapshot {snapshot_id}", colour=discord.Colour.blurple())
    if state.label:
        embed.description = short(state.label, 100)
    created = discord.utils.format_dt(datetime.datetime.fromtimestamp(state.created_at, datetime.UTC), "f")
    embed.add_field(name="Created", value=f"{created} ({format_age(state.created_at)})")
    embed.add_field(name="Kind", value=state.kind.value)
    embed.add_field(name="Channel", value=f"<#{state.channel_id}>" if state.channel_id else "none")
    current = state.queue.current
    if current is None:
        playing = "nothing"
    elif current.info.get("isStream"):
        playing = f"{short(current.title)} (live stream)"
    else:
        playing = f"{short(current.title)} at {format_ms(state.player.position)} / {format_ms(current.length)}"
    embed.add_field(name="Track", value=playing, inline=False)
    embed.add_field(name="Paused", value="yes" if state.player.paused else "no")
    embed.add_field(name="Volume", value=str(state.player.volume))
    embed.add_field(name="Queue", value=tracks_text(len(state.queue.upcoming)))
    embed.add_field(name="History", value=tracks_text(len(state.queue.history)))
    embed.add_field(name="Loop", value=state.queue.loop_mode.value)
    filters = ", ".join(state.filters.active_filters) or "none"
    embed.add_field(name="Filters", value=plain(filters, 1024))
    autoplay = state.autoplay.mode.value
    if state.autoplay.auto_queue:
        autoplay += f" ({tracks_text(len(state.autoplay.auto_queue))} suggested)"
    embed.add_field(name="Autoplay", value=autoplay)
    embed.add_field(name="Size", value=format_size(meta.size) if meta is not None else "unknown")
    return embed


def report_embed(snapshot_id: str, report: RestoreReport, backup: SnapshotMeta | None) -> discord.Embed:
    """The embed that answers a restore: what :class:`RestoreReport` says happened."""
    status = report.status
    embed = discord.Embed(title=_STATUS_TITLES.get(status, "Restore"), colour=_STATUS_COLOURS.get(status))
    lines = [f"Snapshot `{snapshot_id}` \N{MIDDLE DOT} {parts_text(report.parts)}"]
    if status is RestoreStatus.rolled_back:
        lines.append(f"It did not come back as recorded ({report.reason}); the previous state was put back.")
    elif report.reason:
        lines.append(f"Reason: {report.reason}")
    embed.description = "\n".join(lines)
    if status in (RestoreStatus.restored, RestoreStatus.rolled_back):
        embed.add_field(name="Track", value=short(report.track) if report.track else "nothing")
        if report.position is not None:
            embed.add_field(name="Position", value=format_ms(report.position))
        embed.add_field(name="Queue", value=tracks_text(report.queue_length))
        if report.volume is not None:
            embed.add_field(name="Volume", value=str(report.volume))
    if backup is not None:
        embed.set_footer(text=f"What was playing before is saved as snapshot {backup.id}")
    return embed


def done_embed(title: str, description: str) -> discord.Embed:
    """A green embed saying something was done."""
    return discord.Embed(title=title, description=description, colour=discord.Colour.green())


# -- buttons ----------------------------------------------------------------------------------------


class OwnerView(discord.ui.View):
    """A view that only the member who ran the command can use.

    Parameters
    ----------
    owner_id:
        The id of the member who ran the command.
    timeout:
        Seconds of inactivity before the view stops (``None``: never).
    on_error:
        Called with the interaction and the error when a button callback raises.

    Attributes
    ----------
    origin:
        The command interaction whose response carries this view; set it after sending, so that
        :meth:`on_timeout` can edit that response.
    """

    def __init__(self, owner_id: int, *, timeout: float | None, on_error: ErrorHandler) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.origin: discord.Interaction | None = None
        self._error_handler = on_error

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Let the owner through; tell anyone else, ephemerally, that the buttons are not theirs."""
        if interaction.user.id == self.owner_id:
            return True
        await interaction.response.send_message(NOT_YOURS, ephemeral=True)
        return False

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]) -> None:
        """Hand the error to the commands' error handler (one sentence, logged when unexpected)."""
        await self._error_handler(interaction, error)

    async def edit_origin(self, **fields: Any) -> None:
        """Edit the response that carries this view (quietly gives up if Discord refuses)."""
        if self.origin is None:
            return
        try:
            await self.origin.edit_original_response(**fields)
        except discord.HTTPException as exc:  # the token expired or the message was dismissed
            _log.debug("could not edit the response of interaction %s: %s", self.origin.id, exc)


class Paginator(OwnerView):
    """Previous / Next buttons over ``page_count`` pages that ``render(index)`` draws.

    The buttons are disabled at the ends; on timeout both are disabled and the page stays.

    Parameters
    ----------
    owner_id, timeout, on_error:
        As for :class:`OwnerView`.
    page_count:
        How many pages there are (at least 1).
    render:
        Returns the embed of the page at a zero-based index.
    """

    def __init__(
        self,
        owner_id: int,
        *,
        page_count: int,
        render: Callable[[int], discord.Embed],
        timeout: float | None,
        on_error: ErrorHandler,
    ) -> None:
        super().__init__(owner_id, timeout=timeout, on_error=on_error)
        self.page_count = max(1, page_count)
        self.page = 0
        self._render = render
        self._sync_buttons()

    def current_embed(self) -> discord.Embed:
        """The embed of the current page."""
        return self._render(self.page)

    def _sync_buttons(self) -> None:
        self.previous_page.disabled = self.page <= 0
        self.next_page.disabled = self.page >= self.page_count - 1

    async def _show(self, interaction: discord.Interaction, page: int) -> None:
        self.page = min(max(page, 0), self.page_count - 1)
        self._sync_buttons()
        await interaction.response.edit_message(embed=self.current_embed(), view=self)

    @discord.ui.button(label="Previous", emoji="\N{BLACK LEFT-POINTING TRIANGLE}", custom_id="sonora:page:previous")
    async def previous_page(self, interaction: discord.Interaction, button: discord.ui.Button[Paginator]) -> None:
        """Show the previous page."""
        await self._show(interaction, self.page - 1)

    @discord.ui.button(label="Next", emoji="\N{BLACK RIGHT-POINTING TRIANGLE}", custom_id="sonora:page:next")
    async def next_page(self, interaction: discord.Interaction, button: discord.ui.Button[Paginator]) -> None:
        """Show the next page."""
        await self._show(interaction, self.page + 1)

    async def on_timeout(self) -> None:
        """Disable both buttons; the page stays readable."""
        self.previous_page.disabled = True
        self.next_page.disabled = True
        await self.edit_origin(view=self)


class ConfirmView(OwnerView):
    """Confirm / Cancel buttons; ``on_confirm(interaction)`` runs once, on the first Confirm.

    ``on_confirm`` must answer the click (for instance ``interaction.response.edit_message``).
    Cancel replaces the message with ``cancelled``; a timeout with ``timed_out``. Either way the
    buttons are removed.

    Parameters
    ----------
    owner_id, timeout, on_error:
        As for :class:`OwnerView`.
    on_confirm:
        What to do once confirmed.
    cancelled, timed_out:
        The embeds shown after Cancel and after a timeout.

    Attributes
    ----------
    result:
        ``True`` once confirmed, ``False`` once cancelled or timed out, ``None`` while waiting.
    """

    def __init__(
        self,
        owner_id: int,
        *,
        on_confirm: Callable[[discord.Interaction], Awaitable[None]],
        cancelled: discord.Embed,
        timed_out: discord.Embed,
        timeout: float | None,
        on_error: ErrorHandler,
    ) -> None:
        super().__init__(owner_id, timeout=timeout, on_error=on_error)
        self._on_confirm = on_confirm
        self._cancelled = cancelled
        self._timed_out = timed_out
        self.result: bool | None = None

    async def _decide(self, interaction: discord.Interaction, result: bool) -> bool:
        if self.result is not None:
            await interaction.response.send_message(ALREADY_ANSWERED, ephemeral=True)
            return False
        self.result = result
        self.stop()
        return True

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.danger, custom_id="sonora:confirm:yes")
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        """Go ahead."""
        if await self._decide(interaction, True):
            await self._on_confirm(interaction)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary, custom_id="sonora:confirm:no")
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        """Change nothing."""
        if await self._decide(interaction, False):
            await interaction.response.edit_message(embed=self._cancelled, view=None)

    async def on_timeout(self) -> None:
        """Nobody answered: say so and remove the buttons."""
        if self.result is None:
            self.result = False
            await self.edit_origin(embed=self._timed_out, view=None)
