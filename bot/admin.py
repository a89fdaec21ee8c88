"""The admins' /retrain: start, follow (one message edited in place), cancel, list and roll back bundles.

The job itself runs in :mod:`bot.retrain`; versions and rollback go through the engine's admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Message, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.engine_answers import BundleSummary
from bot.engine_client import EngineRequestError, EngineUnavailable
from bot.retrain import RetrainError
from bot.services import Services, services

log = logging.getLogger(__name__)


async def retrain_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/retrain [status|cancel|versions|rollback [VERSION]]: admins only."""
    user, message = update.effective_user, update.effective_message
    assert user is not None and message is not None
    s = services(context)
    if user.id not in s.settings.admin_ids:
        log.warning("refused /retrain from user %d", user.id)
        await message.reply_text("Sorry, only the bot's admins can retrain the model.")
        return
    action = (context.args or ["start"])[0].lower()
    if action in ("versions", "rollback"):
        try:
            text = await (_rollback(s, context.args[1:] if context.args else []) if action == "rollback"
                          else _versions_text(s))
        except EngineRequestError as exc:
            text = f"The engine refused: {exc}"
        await message.reply_text(text)
        return
    if action == "status":
        await message.reply_text((await s.retrain.status()).describe())
        return
    if action == "cancel":
        done = await s.retrain.cancel()
        await message.reply_text("Retraining cancelled." if done else "No retraining is running.")
        return
    try:
        status = await s.retrain.start()
    except RetrainError as exc:
        await message.reply_text(f"Can't retrain: {exc}.")
        return
    progress = await message.reply_text(status.describe())
    context.application.create_task(_follow_retrain(context, progress), update=update)


def _summary_line(entry: BundleSummary | None) -> str:
    """One bundle's filter and retrieval figures, for comparing versions."""
    if entry is None:
        return "—"
    parts = [f"kept {entry.kept} of {entry.total} posts"]
    if entry.image_search:
        recalls = "/".join(f"{entry.image_search.get(k, 0):.1f}" for k in ("r1", "r5", "r10"))
        parts.append(f"image search R@1/5/10 {recalls}")
    return ", ".join(parts)


async def _versions_text(s: Services, limit: int = 10) -> str:
    """The published bundles, newest first, marking the served one."""
    listing = await s.engine.versions()
    lines = ["Published bundles (newest first):"]
    for entry in listing.bundles[:limit]:
        mark = " ← serving" if entry.version == listing.served else ""
        lines.append(f"• {entry.version}: {_summary_line(entry)}{mark}")
    lines.append("Roll back with /retrain rollback [VERSION] (default: the one before).")
    return "\n".join(lines)


async def _rollback(s: Services, args: list[str]) -> str:
    """Activate ``args[0]`` or the bundle published before the served one."""
    listing = await s.engine.versions()
    names = [b.version for b in listing.bundles]
    served = listing.served
    if args:
        target = args[0]
        if target not in names:
            return f"No bundle named {target}. See /retrain versions."
    elif served in names and names.index(served) + 1 < len(names):
        target = names[names.index(served) + 1]
    else:
        return "There is no older bundle to roll back to."
    done = await s.engine.activate(target)
    return f"Rolled back: the engine now serves {done.version} (was {done.previous})."


async def _follow_retrain(
    context: ContextTypes.DEFAULT_TYPE, progress: Message, every_s: float = 2.0
) -> None:
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
        text = status.describe()
        if status.state == "done":
            try:
                await s.engine.reload()
                version = (await s.engine.stats(fresh=True)).version
                text = f"Retraining done. The engine now serves version {version}."
                text += await _comparison(s, version, old_version)
            except (EngineUnavailable, EngineRequestError) as exc:
                text = f"Retraining done (version {status.version}), but the engine did not reload: {exc}"
        if text != shown:
            with contextlib.suppress(TelegramError):
                await progress.edit_text(text)
            shown = text
        if waiter.done():
            return


async def _comparison(s: Services, new: str, old: str | None) -> str:
    """The new bundle's figures beside the old one's ('' when the engine can't list bundles)."""
    try:
        listing = {b.version: b for b in (await s.engine.versions()).bundles}
    except (EngineUnavailable, EngineRequestError):
        return ""
    text = f"\nnew: {_summary_line(listing.get(new))}"
    if old and old != new:
        text += f"\nold ({old}): {_summary_line(listing.get(old))}"
    return text
