"""Median latency (ms) from an update queued at the local Bot API to the bot's answer, against a real engine.

Usage: python scripts/bench_bot_latency.py [ENGINE_URL]   (default http://127.0.0.1:8080: an engine already
serving a bundle, e.g. the one scripts/run.sh starts)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import urllib.request
from typing import Any

from bot.app import build_application, running
from bot.local_api import LocalBotApi
from bot.settings import BotSettings


async def main(engine: str) -> None:
    """Time /related, albums (first upload, then cached file_ids) and inline queries."""
    api = LocalBotApi("1:x")
    await api.start()
    settings = BotSettings(
        token="1:x", engine_url=engine, telegram_api_url=api.url, user_burst=1000, user_rate_per_minute=100000
    )
    async with running(build_application(settings)):

        async def timed(update: Any, method: str) -> float:
            n = len(api.calls)
            t = time.perf_counter()
            await api.push(update)
            await api.wait_for(method, None, after=n)
            dt = (time.perf_counter() - t) * 1000
            await asyncio.sleep(1.1)  # stay under python-telegram-bot's own 30 msg/s throttle
            return dt

        words = ["dog", "boy", "girl", "water", "beach"]
        rel = [await timed(api.text_update(f"/related {w}"), "sendMessage") for w in words]
        first = [await timed(api.text_update(f"/images {w}"), "sendMediaGroup") for w in words]
        again = [await timed(api.text_update(f"/images {w}"), "sendMediaGroup") for w in words]
        inline = [await timed(api.inline_update(w), "answerInlineQuery") for w in ("snow", "bike", "red")]
    await api.stop()
    rows = [("related", rel), ("album first (upload)", first), ("album again (file_id)", again)]
    rows.append(("inline", inline))
    for name, xs in rows:
        print(f"{name:24s} median {statistics.median(xs):6.1f} ms  max {max(xs):6.1f} ms  n={len(xs)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", nargs="?", default="http://127.0.0.1:8080", help="the engine's base URL")
    url = ap.parse_args().engine.rstrip("/")
    try:  # without an engine every answer is "busy" and the waits below time out: say so at once
        urllib.request.urlopen(f"{url}/healthz", timeout=5)
    except OSError as exc:
        raise SystemExit(f"no engine answering at {url}/healthz ({exc}): start one, e.g. "
                         "python -m engine --models models") from exc
    asyncio.run(main(url))
