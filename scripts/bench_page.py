"""The web page's cost on the engine: requests per page view and the time to first results.

    python scripts/bench_page.py --models models --views 5

Starts ``python -m engine`` on the models folder and Debian's chromium (scripts/pagetools.py). Each view
opens ``/?q=QUERY`` in a fresh browser context (an empty browser cache, like a first visit); the engine's
own ``engine_requests_total`` before and after tells what reached it, by route. Times are the browser's,
from the start of navigation: the results in the page (the script's ``first-results`` mark, set when the
first page of results is in the document), then every thumbnail on screen loaded (the others load lazily,
as the page scrolls); for the map its mosaic, for the analyses their figures on screen. The first view
finds the engine's answer cache empty for that query; the following ones find it filled (hits). Then one view
again in the last context (the browser's cache filled: the tagged static files are not asked again), and
the photo map and the analyses opened once each.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pagetools import chromium, engine, request_counts

WAIT_MS = 120_000
# Functions, not expressions: playwright evaluates a bare expression with eval, which the page's CSP refuses.
LOADED = ("() => [...document.querySelectorAll('#results img')]"
          ".filter(i => i.getBoundingClientRect().top < innerHeight)"
          ".every(i => i.complete && i.naturalWidth > 0)")  # the thumbnails on screen (the others are lazy)
MARK = "performance.getEntriesByName('first-results')[0]?.startTime ?? null"
# Bytes over the network (0 for what the browser's cache answered), page and every resource.
TRANSFERRED = ("() => [...performance.getEntriesByType('navigation'),"
               " ...performance.getEntriesByType('resource')]"
               ".reduce((sum, e) => sum + (e.transferSize || 0), 0)")
MAP_READY = "() => document.querySelector(\"#map-view[data-ready='1']\")"
MAP_LOADED = "() => [document.getElementById('map-img')].every(i => i.complete && i.naturalWidth > 0)"
ANALYSES_READY = "() => document.querySelector('#analyses-body h2')"
ANALYSES_LOADED = ("() => [...document.querySelectorAll('#analyses img')]"
                   ".filter(i => i.getBoundingClientRect().top < innerHeight)"
                   ".every(i => i.complete && i.naturalWidth > 0)")


def engine_requests(url: str, before: dict[tuple[str, str], float]) -> tuple[dict[str, int], float]:
    """The requests that reached the engine since ``before``, by route, and the engine's seconds on them."""
    after = request_counts(url)
    seconds = after.pop(("", "s")) - before.get(("", "s"), 0.0)
    out: dict[str, int] = {}
    for (endpoint, status), n in after.items():
        delta = int(n - before.get((endpoint, status), 0.0))
        if delta and endpoint != "/metrics":
            key = endpoint if status == "200" else f"{endpoint} ({status})"
            out[key] = out.get(key, 0) + delta
    return dict(sorted(out.items())), seconds


def one_view(page: Any, url: str, address: str, ready: str, loaded: str) -> dict[str, Any]:
    before = request_counts(url)
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.resource_type))
    page.goto(url + address)
    page.wait_for_function(ready)
    first = page.evaluate(MARK)
    page.wait_for_function(loaded)
    done = page.evaluate("performance.now()")
    page.wait_for_load_state("networkidle")
    counts, seconds = engine_requests(url, before)
    return {
        "address": address,
        "first_results_ms": None if first is None else round(first, 1),
        "loaded_ms": round(done, 1),
        "engine_requests": sum(counts.values()),
        "by_route": counts,
        "engine_ms": round(seconds * 1000, 1),  # the engine's time answering them, all added up
        "transferred_kb": round(page.evaluate(TRANSFERRED) / 1024, 1),
        # The browser's requests, answered by its cache or not (playwright sees both).
        "browser_requests": len(seen),
        "browser_by_type": {t: seen.count(t) for t in sorted(set(seen))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True, help="a models folder with an active bundle")
    ap.add_argument("--query", default="dog")
    ap.add_argument("--views", type=int, default=5, help="cold-browser views of the search")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    address = "/?q=" + quote(args.query)
    ready = "() => document.querySelectorAll('#results li').length > 0"
    views = []
    with engine(args.models) as url, chromium() as browser:
        context = None
        for _ in range(args.views):
            if context is not None:
                context.close()
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(WAIT_MS)
            views.append(one_view(context.new_page(), url, address, ready, LOADED))
        assert context is not None
        again = one_view(context.new_page(), url, address, ready, LOADED)
        extra = {}
        tabs = (("map", "/#map", MAP_READY, MAP_LOADED),
                ("analyses", "/#analyses", ANALYSES_READY, ANALYSES_LOADED))
        for name, tab, tab_ready, tab_loaded in tabs:
            fresh = browser.new_context(viewport={"width": 1280, "height": 900})
            fresh.set_default_timeout(WAIT_MS)
            extra[name] = one_view(fresh.new_page(), url, tab, tab_ready, tab_loaded)
            fresh.close()
        context.close()
    warm = views[1:] or views
    report = {
        "query": args.query,
        "first_view": views[0],
        "later_views": {
            "n": len(warm),
            "first_results_ms_median": round(statistics.median(v["first_results_ms"] for v in warm), 1),
            "loaded_ms_median": round(statistics.median(v["loaded_ms"] for v in warm), 1),
            "engine_requests": sorted({v["engine_requests"] for v in warm}),
            "engine_ms_median": round(statistics.median(v["engine_ms"] for v in warm), 1),
        },
        "again_same_browser": again,
        **extra,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
