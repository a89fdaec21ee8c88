"""The admins' /retrain: start, follow (one message edited in place), cancel, list and roll back bundles.

The job itself runs in :mod:`bot.retrain`; versions and rollback go through the engine's admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Message, Update
from telegram.error import TelegramError

from bot.context import BotContext
from bot.engine_answers import BundleSummary
from bot.engine_client import EngineRequestError, EngineUnavailable
from bot.messages import number, percent, plural, text
from bot.retrain import RetrainError
from bot.services import Services, services
from space.jobs import RetrainStatus

log = logging.getLogger(__name__)


async def retrain_cmd(update: Update, context: BotContext) -> None:
    """/retrain [status|cancel|versions|rollback [VERSION]]: admins only."""
    user, message = update.effective_user, update.effective_message
    assert user is not None and message is not None
    s = services(context)
    if user.id not in s.settings.admin_ids:
        log.warning("refused /retrain from user %d", user.id)
        await message.reply_text(context.t("admins_only"))
        return
    action = (context.args or ["start"])[0].lower()
    if action in ("versions", "rollback"):
        try:
            reply = await (_rollback(s, context.args[1:] if context.args else [], context.lang)
                           if action == "rollback" else _versions_text(s, context.lang))
        except EngineRequestError as exc:
            reply = context.t("engine_refused", why=exc)
        await message.reply_text(reply)
        return
    if action == "status":
        await message.reply_text(status_text(await s.retrain.status(), context.lang))
        return
    if action == "cancel":
        done = await s.retrain.cancel()
        await message.reply_text(context.t("cancelled" if done else "not_running"))
        return
    try:
        status = await s.retrain.start()
    except RetrainError as exc:
        await message.reply_text(context.t("cant_retrain", why=exc))
        return
    progress = await message.reply_text(status_text(status, context.lang))
    context.application.create_task(_follow_retrain(context, progress), update=update)


def status_text(status: RetrainStatus, lang: str) -> str:
    """Where a retraining stands, in ``lang``: one line the admin's message is edited to."""
    if status.state == "idle":
        return text(lang, "retrain_idle")
    if status.state == "done":
        return text(lang, "retrain_finished", version=status.version or "?")
    if status.state == "failed":
        return text(lang, "retrain_failed", error=status.error or text(lang, "retrain_unknown_error"))
    if status.state == "cancelled":
        return text(lang, "retrain_was_cancelled")
    stage = status.stage or "starting"
    stage_key = f"stage_{stage}"
    named = text(lang, stage_key)
    parts = [text(lang, "retrain_stage", stage=stage if named == stage_key else named)]
    unit = _unit(lang, status.unit, int(status.total or 0))
    if status.done is not None and status.total:
        parts.append(text(lang, "retrain_count", done=status.done, total=status.total, unit=unit,
                          percent=percent(lang, status.done / status.total)).replace("  ", " "))
    if status.rate:
        parts.append(text(lang, "retrain_rate", rate=number(lang, status.rate, 1),
                          unit=_unit(lang, status.unit or "items", 2)))
    if status.elapsed is not None:
        parts.append(text(lang, "retrain_elapsed", time=_duration(status.elapsed)))
    if status.eta is not None:
        parts.append(text(lang, "retrain_eta", time=_duration(status.eta)))
    return " · ".join(parts)


def _unit(lang: str, unit: str, n: int) -> str:
    """The trainer's unit ("images", "epochs") in ``lang`` (as it is when the catalogs lack it)."""
    if not unit:
        return ""
    key = f"unit_{unit}"
    named = plural(lang, key, n)
    return unit if named == key else named


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _summary_line(entry: BundleSummary | None, lang: str) -> str:
    """One bundle's filter and retrieval figures, for comparing versions."""
    if entry is None:
        return "—"
    kept = "?" if entry.kept is None else entry.kept
    parts = [plural(lang, "kept_posts", entry.total, kept=kept) if entry.total is not None
             else text(lang, "kept_posts_unknown", kept=kept)]
    if entry.image_search:
        recalls = "/".join(number(lang, entry.image_search.get(k, 0), 1) for k in ("r1", "r5", "r10"))
        parts.append(text(lang, "recalls", recalls=recalls))
    return ", ".join(parts)


async def _versions_text(s: Services, lang: str, limit: int = 10) -> str:
    """The published bundles, newest first, marking the served one."""
    listing = await s.engine.versions()
    lines = [text(lang, "versions_title")]
    for entry in listing.bundles[:limit]:
        mark = text(lang, "serving") if entry.version == listing.served else ""
        lines.append(f"• {entry.version}: {_summary_line(entry, lang)}{mark}")
    lines.append(text(lang, "rollback_hint"))
    return "\n".join(lines)


async def _rollback(s: Services, args: list[str], lang: str) -> str:
    """Activate ``args[0]`` or the bundle published before the served one."""
    listing = await s.engine.versions()
    names = [b.version for b in listing.bundles]
    served = listing.served
    if args:
        target = args[0]
        if target not in names:
            return text(lang, "no_bundle_named", name=target)
    elif served in names and names.index(served) + 1 < len(names):
        target = names[names.index(served) + 1]
    else:
        return text(lang, "no_older")
    try:
        done = await s.engine.activate(target)
    except EngineRequestError as exc:
        if exc.code == "unknown_version":  # removed since the listing
            return text(lang, "no_bundle_named", name=target)
        raise
    return text(lang, "rolled_back", version=done.version, previous=done.previous)


async def _follow_retrain(context: BotContext, progress: Message, every_s: float = 2.0) -> None:
    """Edit one message with the job's progress until it ends; then reload the engine."""
    s = services(context)
    shown = progress.text or ""
    old_version: str | None = None
    with contextlib.suppress(EngineUnavailable, EngineRequestError):
        old_version = (await s.engine.stats(fresh=True)).version
    waiter = asyncio.ensure_future(s.retrain.wait())
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), every_s)
        status = waiter.result() if waiter.done() else await s.retrain.status()
        reply = status_text(status, context.lang)
        if status.state == "done":
            try:
                await s.engine.reload()
                version = (await s.engine.stats(fresh=True)).version
                reply = context.t("retrain_done", version=version)
                reply += await _comparison(s, version, old_version, context.lang)
            except (EngineUnavailable, EngineRequestError) as exc:
                reply = context.t("retrain_no_reload", version=status.version, why=exc)
        if reply != shown:
            with contextlib.suppress(TelegramError):
                await progress.edit_text(reply)
            shown = reply
        if waiter.done():
            return


async def _comparison(s: Services, new: str, old: str | None, lang: str) -> str:
    """The new bundle's figures beside the old one's ('' when the engine can't list bundles)."""
    try:
        listing = {b.version: b for b in (await s.engine.versions()).bundles}
    except (EngineUnavailable, EngineRequestError):
        return ""
    lines = "\n" + text(lang, "new_figures", line=_summary_line(listing.get(new), lang))
    if old and old != new:
        lines += "\n" + text(lang, "old_figures", version=old, line=_summary_line(listing.get(old), lang))
    return lines
