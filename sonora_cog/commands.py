"""``/snapshot``: the slash commands server admins use to save, inspect and restore sessions.

The group is a ``commands.GroupCog`` that :class:`~sonora_cog.cog.SonoraCog` adds and removes with
itself (unless ``commands.enabled = false``), so discord.py adds ``/snapshot`` to the tree and takes
it away atomically with the cog. Who may use it is decided once, in
:meth:`SnapshotCommands.interaction_check`: members with Manage Server, or with one of
``commands.allowed_role_ids``. Answers are ephemeral embeds; errors are one plain ephemeral sentence,
chosen in :meth:`SnapshotCommands.cog_app_command_error`.

A guild only ever sees its own snapshots: every lookup is made with the interaction's guild id, so an
id from another guild is simply "not found" here.

The group is registered with ``default_permissions=Manage Server``, which Discord itself enforces: a
role in ``allowed_role_ids`` that lacks Manage Server must also be given access to ``/snapshot`` by
the server's admins (Server Settings > Integrations), then this group's own check lets it through.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from .cadence import format_interval
from .commands_views import (
    ConfirmView,
    Paginator,
    choice_name,
    done_embed,
    format_age,
    format_size,
    parts_text,
    plain,
    report_embed,
    short,
    snapshot_info,
    snapshot_page,
    tracks_text,
)
from .errors import (
    DecryptionError,
    DuplicateSnapshot,
    ForeignGuildError,
    GuildNotOwned,
    InvalidIdentifier,
    InvalidSnapshot,
    RestoreError,
    RestoreInProgress,
    SchemaVersionError,
    SnapshotCorrupted,
    SnapshotNotFound,
    SnapshotTooLarge,
    SonoraError,
    StoreError,
)
from .meta import LABEL_MAX_LENGTH, SnapshotKind
from .model import SessionState
from .restore import ALL_PARTS, RestoreReport
from .session import Phase

if TYPE_CHECKING:
    from .cog import SonoraCog
    from .config import CommandSettings

__all__ = ("SnapshotCommands", "error_sentence")

_log = logging.getLogger(__name__)

#: Parsing an import larger than this runs in a worker thread.
_THREAD_PARSE_BYTES = 256 * 1024
GENERIC_ERROR = "Something went wrong; the error was logged."
BUSY = "A restore is already running in this server; try again in a moment."
PART_CHOICES = [
    app_commands.Choice(name="everything", value="all"),
    app_commands.Choice(name="player: track, position, volume, pause", value="player"),
    app_commands.Choice(name="queue: upcoming tracks, history, loop mode", value="queue"),
    app_commands.Choice(name="filters", value="filters"),
    app_commands.Choice(name="autoplay: mode and auto queue", value="autoplay"),
]


def _wanted_parts(parts: app_commands.Choice[str] | None) -> frozenset[str]:
    if parts is None or parts.value == "all":
        return ALL_PARTS
    return frozenset({parts.value})


def _has_session(state: SessionState | None) -> bool:
    return state is not None and (state.queue.current is not None or bool(state.queue.upcoming))


# -- errors -----------------------------------------------------------------------------------------


def error_sentence(error: BaseException, *, command: str | None = None, snapshot: str | None = None) -> str | None:
    """One friendly sentence for a known error, or ``None`` for an unexpected one.

    Parameters
    ----------
    error:
        The error (unwrapped from :class:`~discord.app_commands.CommandInvokeError`).
    command:
        The subcommand's name (``"import"`` speaks of files, ``"create"`` of labels).
    snapshot:
        The snapshot id the member gave, if any.
    """
    what = "That file" if command == "import" else "That snapshot"
    named = f"`{plain(snapshot, 40)}`" if snapshot else "with that id"
    if isinstance(error, app_commands.NoPrivateMessage):
        return "These commands only work in a server."
    if isinstance(error, app_commands.MissingPermissions):
        return "You need the Manage Server permission or an allowed role to manage snapshots."
    if isinstance(error, app_commands.CheckFailure):
        return "You cannot use this command here."
    if isinstance(error, app_commands.TransformerError):
        return f"That value is not accepted for this option: {plain(str(error.value), 60)!r}."
    if isinstance(error, SnapshotNotFound):
        return f"There is no snapshot {named} in this server."
    if isinstance(error, InvalidIdentifier):
        if command == "create":
            return f"That label cannot be used: {error}."
        return f"There is no snapshot {named} in this server (pick one from the suggestions)."
    if isinstance(error, ForeignGuildError):
        return f"{what} belongs to another server, so it cannot be used here."
    if isinstance(error, DuplicateSnapshot):
        return f"{what} is already stored here: {error}."
    if isinstance(error, SnapshotTooLarge):
        return f"{what} is too large: {error}."
    if isinstance(error, InvalidSnapshot):
        where = f" at `{error.path}`" if error.path else ""
        return f"{what} is not a valid snapshot{where}: {plain(error.reason, 300)}."
    if isinstance(error, SnapshotCorrupted):
        return f"{what} is damaged and cannot be read ({type(error).__name__})."
    if isinstance(error, SchemaVersionError):
        return f"{what} was written by a newer or unknown version and cannot be read here: {error}."
    if isinstance(error, DecryptionError):
        return f"{what} cannot be decrypted with this bot's keys (wrong key, or it was tampered with)."
    if isinstance(error, StoreError):
        return "The snapshot store is not available right now; try again later."
    if isinstance(error, RestoreInProgress):
        return BUSY
    if isinstance(error, GuildNotOwned):
        return "Another process of this bot plays in this server right now; try again in a moment."
    if isinstance(error, RestoreError):
        return f"The restore could not run: {plain(str(error), 200)}."
    return None


async def send_text(interaction: discord.Interaction, text: str) -> None:
    """Answer ephemerally with one plain sentence, whether or not the interaction was answered yet."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:  # the interaction expired: the member cannot be told
        _log.debug("could not answer interaction %s: %s", interaction.id, exc)


async def _send_embed(
    interaction: discord.Interaction,
    embed: discord.Embed,
    *,
    view: discord.ui.View | None = None,
    file: discord.File | None = None,
) -> None:
    extra: dict[str, Any] = {}
    if view is not None:
        extra["view"] = view
    if file is not None:
        extra["file"] = file
    if interaction.response.is_done():
        await interaction.followup.send(embed=embed, ephemeral=True, **extra)
    else:
        await interaction.response.send_message(embed=embed, ephemeral=True, **extra)


def _guild(interaction: discord.Interaction) -> discord.Guild:
    if interaction.guild is None:
        raise app_commands.NoPrivateMessage()
    return interaction.guild


async def _defer(interaction: discord.Interaction) -> None:
    if not interaction.response.is_done():
        await interaction.response.defer(ephemeral=True, thinking=True)


#: Seconds an attachment download may take in all (a CDN that trickles bytes does not hold a command).
DOWNLOAD_TIMEOUT = 30.0


async def _download_capped(client: discord.Client, file: discord.Attachment, cap: int) -> bytes:
    """The attachment's bytes, reading at most ``cap + 1`` of them whatever its declared size said, within
    :data:`DOWNLOAD_TIMEOUT` seconds."""
    chunks, size = [], 0
    try:
        timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(file.url, proxy=client.http.proxy) as response,
        ):
            if response.status != 200:
                raise SonoraError(f"the attachment could not be downloaded (HTTP {response.status})")
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > cap:
                    declared = format_size(file.size)
                    raise SnapshotTooLarge(f"it is over {format_size(cap)} (its declared size was {declared})")
                chunks.append(chunk)
    except TimeoutError:
        raise SonoraError(f"the attachment did not arrive within {DOWNLOAD_TIMEOUT:g} s") from None
    except aiohttp.ClientError as exc:
        raise SonoraError(f"the attachment could not be downloaded ({type(exc).__name__})") from None
    return b"".join(chunks)


# -- the group --------------------------------------------------------------------------------------


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class SnapshotCommands(
    commands.GroupCog,
    name="SonoraSnapshots",
    group_name="snapshot",
    group_description="Save, inspect and restore this server's music sessions",
):
    """The ``/snapshot`` slash command group (a group cog).

    Parameters
    ----------
    cog:
        The loaded :class:`~sonora_cog.cog.SonoraCog` (its manager, session owner, settings and
        :meth:`~sonora_cog.cog.SonoraCog.restore`).

    .. versionadded:: 0.1
    """

    #: Seconds the Previous / Next buttons of ``/snapshot list`` stay active.
    page_timeout: float = 300.0

    def __init__(self, cog: SonoraCog) -> None:
        self.cog = cog
        super().__init__()

    @property
    def settings(self) -> CommandSettings:
        """The ``[commands]`` settings."""
        return self.cog.settings.commands

    # -- permission -----------------------------------------------------------------------------

    def is_allowed(self, interaction: discord.Interaction) -> bool:
        """Whether the member has Manage Server or one of ``commands.allowed_role_ids``."""
        permissions = interaction.permissions
        if permissions.manage_guild or permissions.administrator:
            return True
        allowed = set(self.settings.allowed_role_ids)
        user = interaction.user
        return bool(allowed) and isinstance(user, discord.Member) and any(r.id in allowed for r in user.roles)

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        """The one permission check of every ``/snapshot`` subcommand."""
        _guild(interaction)
        if not self.is_allowed(interaction):
            raise app_commands.MissingPermissions(["manage_guild"])  # discord.py's own: or an allowed role
        return True

    # -- errors ---------------------------------------------------------------------------------

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Turn any error of a subcommand into one plain ephemeral sentence."""
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await self.report_error(interaction, original)

    async def report_error(self, interaction: discord.Interaction, error: BaseException) -> None:
        """Answer ``error`` with its sentence; log unexpected errors (and store failures) with the guild id."""
        command = interaction.command.name if interaction.command is not None else None
        snapshot = getattr(interaction.namespace, "snapshot", None)
        sentence = error_sentence(error, command=command, snapshot=snapshot if isinstance(snapshot, str) else None)
        if sentence is None:
            _log.error("/snapshot %s failed in guild %s", command, interaction.guild_id, exc_info=error)
            sentence = GENERIC_ERROR
        elif isinstance(error, StoreError):
            _log.error("/snapshot %s in guild %s: store error: %s", command, interaction.guild_id, error)
        elif isinstance(error, SonoraError):
            _log.info(
                "/snapshot %s in guild %s refused: %s: %s", command, interaction.guild_id, type(error).__name__, error
            )
        await send_text(interaction, sentence)

    async def _view_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await self.report_error(interaction, error)

    # -- autocomplete ---------------------------------------------------------------------------

    async def snapshot_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """This guild's snapshots whose id, kind, label or track contains what was typed (at most 25)."""
        guild = interaction.guild
        if guild is None or not self.is_allowed(interaction):
            return []
        try:
            metas = await self.cog.manager.list_snapshots(guild.id)
        except SonoraError as exc:
            _log.warning("autocomplete: cannot list the snapshots of guild %s: %s", guild.id, exc)
            return []
        needle = current.strip().lower()
        now = time.time()
        choices: list[app_commands.Choice[str]] = []
        for meta in metas:
            haystack = " ".join([meta.id, meta.kind.value, meta.label or "", meta.current_title or ""]).lower()
            if needle and needle not in haystack:
                continue
            choices.append(app_commands.Choice(name=choice_name(meta, now), value=meta.id))
            if len(choices) == 25:
                break
        return choices

    # -- subcommands ----------------------------------------------------------------------------

    @app_commands.command(name="create", description="Save what is playing now as a snapshot")
    @app_commands.describe(label="A name to recognise it by (optional)")
    async def create(
        self, interaction: discord.Interaction, label: app_commands.Range[str, 1, LABEL_MAX_LENGTH] | None = None
    ) -> None:
        """Capture the guild's player now and store it as a ``manual`` snapshot."""
        guild = _guild(interaction)
        await _defer(interaction)
        state = self.cog.current_state(guild, SnapshotKind.manual)
        if state is None:
            await send_text(interaction, "Nothing is playing in this server, so there is nothing to save.")
            return
        meta = await self.cog.manager.save_snapshot(state, label)
        embed = done_embed(
            "Snapshot saved", f"`{meta.id}`" + (f" \N{EM DASH} {short(meta.label, 100)}" if meta.label else "")
        )
        embed.add_field(name="Track", value=short(meta.current_title) if meta.current_title else "nothing")
        embed.add_field(name="Tracks", value=str(meta.track_count))
        embed.add_field(name="Size", value=format_size(meta.size))
        await _send_embed(interaction, embed)

    @app_commands.command(name="list", description="List this server's snapshots, newest first")
    async def list_(self, interaction: discord.Interaction) -> None:
        """A paginated list of the guild's snapshots."""
        guild = _guild(interaction)
        await _defer(interaction)
        metas = await self.cog.manager.list_snapshots(guild.id)
        size = self.settings.page_size
        now = time.time()
        pages = max(1, -(-len(metas) // size))
        if pages == 1:
            await _send_embed(interaction, snapshot_page(metas, 0, size, now))
            return
        view = Paginator(
            interaction.user.id,
            page_count=pages,
            render=lambda page: snapshot_page(metas, page, size),
            timeout=self.page_timeout,
            on_error=self._view_error,
        )
        view.origin = interaction
        await _send_embed(interaction, view.current_embed(), view=view)

    @app_commands.command(name="info", description="Show one snapshot in detail")
    @app_commands.describe(snapshot="The snapshot (start typing to search)")
    @app_commands.autocomplete(snapshot=snapshot_autocomplete)
    async def info(self, interaction: discord.Interaction, snapshot: str) -> None:
        """Channel, track and position, pause, volume, queue, history, loop, filters, autoplay, size."""
        guild = _guild(interaction)
        await _defer(interaction)
        state = await self.cog.manager.load_snapshot(snapshot, guild.id)
        meta = next((m for m in await self.cog.manager.list_snapshots(guild.id) if m.id == snapshot), None)
        await _send_embed(interaction, snapshot_info(snapshot, state, meta))

    @app_commands.command(name="restore", description="Bring a snapshot back (all of it, or one part)")
    @app_commands.describe(
        snapshot="The snapshot (start typing to search)", parts="What to restore (default: everything)"
    )
    @app_commands.choices(parts=PART_CHOICES)
    @app_commands.autocomplete(snapshot=snapshot_autocomplete)
    async def restore(
        self, interaction: discord.Interaction, snapshot: str, parts: app_commands.Choice[str] | None = None
    ) -> None:
        """Restore a snapshot; when something is playing, ask first and save it as ``pre-restore``."""
        guild = _guild(interaction)
        await _defer(interaction)
        state = await self.cog.manager.load_snapshot(snapshot, guild.id)
        if self.cog.owner.phase(guild.id) is Phase.restoring:  # a quick answer; cog.restore is the real gate
            await send_text(interaction, BUSY)
            return
        wanted = _wanted_parts(parts)
        current = self.cog.current_state(guild, SnapshotKind.pre_restore)
        if not _has_session(current):
            report = await self._restore(guild, snapshot, state, wanted)
            await _send_embed(interaction, report_embed(snapshot, report, report.backup))
            return

        async def confirmed(click: discord.Interaction) -> None:
            await click.response.edit_message(
                embed=discord.Embed(title="Restoring\N{HORIZONTAL ELLIPSIS}", description=f"Snapshot `{snapshot}`"),
                view=None,
            )
            try:
                report = await self._restore(guild, snapshot, state, wanted)
            except RestoreError as exc:
                sentence = error_sentence(exc) or GENERIC_ERROR
                await click.edit_original_response(embed=discord.Embed(title="Not restored", description=sentence))
                return
            await click.edit_original_response(embed=report_embed(snapshot, report, report.backup))

        timeout = self.settings.confirm_timeout
        view = ConfirmView(
            interaction.user.id,
            on_confirm=confirmed,
            cancelled=discord.Embed(title="Restore cancelled", description="Nothing was changed."),
            timed_out=discord.Embed(
                title="Restore not confirmed", description=f"No answer within {timeout:g} s; nothing was changed."
            ),
            timeout=timeout,
            on_error=self._view_error,
        )
        view.origin = interaction
        playing = current.queue.current if current is not None else None
        now = f"**{short(playing.title)}**" if playing is not None else "a queue"
        embed = discord.Embed(
            title="Replace what is playing?",
            description=(
                f"Restoring `{snapshot}` ({parts_text(wanted)}) replaces {now} in this server. "
                "What is playing now is saved first as a pre-restore snapshot."
            ),
            colour=discord.Colour.orange(),
        )
        await _send_embed(interaction, embed, view=view)

    async def _restore(
        self, guild: discord.Guild, snapshot_id: str, state: SessionState, parts: frozenset[str]
    ) -> RestoreReport:
        """Restore ``parts`` of ``state``, keeping what plays now as a ``pre-restore`` snapshot first."""
        report = await self.cog.restore(guild, state, parts=parts, pre_restore_label=f"before restoring {snapshot_id}")
        _log.info(
            "guild %s: /snapshot restore %s (%s): %s%s",
            guild.id,
            snapshot_id,
            parts_text(parts),
            report.status.value,
            f" ({report.reason})" if report.reason else "",
        )
        return report

    @app_commands.command(name="delete", description="Delete a snapshot")
    @app_commands.describe(snapshot="The snapshot (start typing to search)")
    @app_commands.autocomplete(snapshot=snapshot_autocomplete)
    async def delete(self, interaction: discord.Interaction, snapshot: str) -> None:
        """Delete one of the guild's snapshots."""
        guild = _guild(interaction)
        await _defer(interaction)
        await self.cog.manager.delete_snapshot(snapshot, guild.id)
        await _send_embed(interaction, done_embed("Snapshot deleted", f"`{snapshot}` is gone."))

    @app_commands.command(name="status", description="What is saved for this server right now")
    async def status(self, interaction: discord.Interaction) -> None:
        """Live record, last checkpoint, pending changes, the auto-snapshot interval and why, snapshots."""
        guild = _guild(interaction)
        await _defer(interaction)
        manager, owner = self.cog.manager, self.cog.owner
        live = await manager.store.get_live(guild.id) is not None
        metas = await manager.list_snapshots(guild.id)
        current = self.cog.current_state(guild, SnapshotKind.live)
        embed = discord.Embed(title="Sonora status", colour=discord.Colour.blurple())
        if current is None:
            player = "not connected"
        elif current.queue.current is None:
            player = "connected, idle" + (
                f" ({tracks_text(len(current.queue.upcoming))} queued)" if current.queue.upcoming else ""
            )
        else:
            verb = "paused on" if current.player.paused else "playing"
            player = (
                f"{verb} **{short(current.queue.current.title)}**, {tracks_text(len(current.queue.upcoming))} queued"
            )
        embed.add_field(name="Player", value=player, inline=False)
        embed.add_field(name="Live record", value="saved" if live else "none")
        saved_at = owner.last_saved_at(guild.id)
        embed.add_field(name="Last checkpoint", value=format_age(saved_at) if saved_at else "not since the bot started")
        embed.add_field(name="Unsaved changes", value="yes" if owner.is_dirty(guild.id) else "no")
        session = owner.session(guild.id)
        embed.add_field(
            name="Session", value=session.phase.value + (f" ({short(session.reason, 80)})" if session.reason else "")
        )
        auto, due = self._auto_schedule(guild.id)
        embed.add_field(name="Auto snapshots", value=auto, inline=False)
        embed.add_field(name="Next auto snapshot", value=due)
        embed.add_field(name="Snapshots", value=str(len(metas)))
        if metas:
            newest = metas[0]
            embed.add_field(
                name="Newest",
                value=f"`{newest.id}` \N{MIDDLE DOT} {newest.kind.value} \N{MIDDLE DOT} "
                f"{format_age(newest.created_at)}",
                inline=False,
            )
        await _send_embed(interaction, embed)

    def _auto_schedule(self, guild_id: int) -> tuple[str, str]:
        """The guild's auto-snapshot interval and why, and when the next one is due."""
        snapshots = self.cog.settings.snapshots
        if not snapshots.auto_enabled:
            return "off (snapshots.auto_enabled = false)", "none"
        owner = self.cog.owner
        cadence = owner.cadence(guild_id).describe()
        remaining = owner.next_auto_in(guild_id)
        if remaining is None:
            return cadence, "once music plays here"
        if remaining <= 0:
            return cadence, "due now (taken at the next check if anything changed)"
        return cadence, f"in {format_interval(remaining)}"

    @app_commands.command(name="export", description="Download a snapshot as a JSON file")
    @app_commands.describe(snapshot="The snapshot (start typing to search)")
    @app_commands.autocomplete(snapshot=snapshot_autocomplete)
    async def export(self, interaction: discord.Interaction, snapshot: str) -> None:
        """The snapshot's plain schema-v1 JSON as ``snapshot-<id>.json``."""
        guild = _guild(interaction)
        await _defer(interaction)
        state = await self.cog.manager.load_snapshot(snapshot, guild.id)
        data = self.cog.manager.export_json(state)
        limit = interaction.filesize_limit
        if len(data) > limit:
            raise SnapshotTooLarge(
                f"its JSON is {format_size(len(data))}, over Discord's upload limit of {format_size(limit)} "
                "(export it with the command-line tool instead)"
            )
        file = discord.File(io.BytesIO(data), filename=f"snapshot-{snapshot}.json")
        embed = done_embed(
            "Snapshot exported", f"`{snapshot}` \N{MIDDLE DOT} {format_size(len(data))} of JSON (schema 1)."
        )
        await _send_embed(interaction, embed, file=file)

    @app_commands.command(name="import", description="Import a snapshot file exported with /snapshot export")
    @app_commands.describe(file="A snapshot-<id>.json file")
    async def import_(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        """Validate an exported file strictly and store it as an ``import`` snapshot of this guild."""
        guild = _guild(interaction)
        cap = self.settings.import_max_bytes
        if file.size > cap:  # refused before anything is downloaded
            raise SnapshotTooLarge(f"it is {format_size(file.size)}, the limit is {format_size(cap)}")
        await _defer(interaction)
        data = await _download_capped(interaction.client, file, cap)
        manager = self.cog.manager
        if len(data) > _THREAD_PARSE_BYTES:
            state = await asyncio.to_thread(manager.parse_export, data, max_bytes=cap)
        else:
            state = manager.parse_export(data, max_bytes=cap)
        meta = await manager.import_snapshot(state, guild_id=guild.id)
        embed = done_embed("Snapshot imported", f"Stored as `{meta.id}` ({meta.kind.value}).")
        embed.add_field(name="Track", value=short(meta.current_title) if meta.current_title else "nothing")
        embed.add_field(name="Tracks", value=str(meta.track_count))
        embed.add_field(name="Captured", value=format_age(state.created_at))
        await _send_embed(interaction, embed)
