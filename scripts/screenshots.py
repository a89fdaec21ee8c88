"""Screenshots of the web page for the README: search results and the photo map (and a phone's view).

    python scripts/screenshots.py --models models --out docs/img/

Starts ``python -m engine`` on the models folder and Debian's chromium (scripts/pagetools.py), opens
``/?q=dog`` and ``/#map``, and writes ``web_search.png``, ``web_map.png`` and ``web_phone.png``, reduced to
a 128-colour palette so each stays within a few hundred KB.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

from pagetools import chromium, engine
from PIL import Image

WAIT_MS = 120_000
# Functions, not expressions: playwright evaluates a bare expression with eval, which the page's CSP refuses.
ALL_LOADED = ("() => [...document.querySelectorAll('{sel}')]"
              ".filter(i => i.getBoundingClientRect().top < innerHeight)"
              ".every(i => i.complete && i.naturalWidth > 0)")


def save_small(png: bytes, out: Path, colours: int = 128) -> int:
    """The screenshot as an optimised palette PNG; its size in bytes."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        out, format="PNG", optimize=True)
    return out.stat().st_size


def search_shot(page: Any, url: str, query: str) -> bytes:
    page.goto(f"{url}/?q={query}")
    page.wait_for_function("() => document.querySelectorAll('#results li').length > 0")
    page.wait_for_function("() => document.querySelectorAll('#related li').length > 0")
    page.wait_for_function(ALL_LOADED.format(sel="#results img"))
    return bytes(page.screenshot())


def map_shot(page: Any, url: str) -> bytes:
    page.goto(f"{url}/#map")
    page.wait_for_selector("#map-view[data-ready='1']")
    page.wait_for_function(ALL_LOADED.format(sel="#map-img"))
    box = page.locator("#map-view").bounding_box()
    # Zoom in on the right of the map, so that single photos can be told apart; the cursor marks one.
    for _ in range(3):
        page.click("#zoom-in")
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.45, steps=8)
    page.mouse.up()
    page.mouse.move(box["x"] + box["width"] * 0.52, box["y"] + box["height"] * 0.5)
    page.wait_for_function(ALL_LOADED.format(sel="#map-img"))
    page.evaluate("() => window.scrollTo(0, 0)")
    return bytes(page.screenshot())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, required=True, help="a models folder with an active bundle")
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--query", default="dog")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with engine(args.models) as url, chromium() as browser:
        shots = {}
        # The map is all photos: a smaller window keeps its PNG within a few hundred KB.
        views = (("web_search.png", (1200, 760), lambda page: search_shot(page, url, args.query)),
                 ("web_map.png", (960, 720), lambda page: map_shot(page, url)))
        for name, size, shot in views:
            context = browser.new_context(viewport={"width": size[0], "height": size[1]})
            context.set_default_timeout(WAIT_MS)
            shots[name] = shot(context.new_page())
            context.close()
        phone = browser.new_context(viewport={"width": 390, "height": 760}, is_mobile=True, has_touch=True,
                                    device_scale_factor=1)
        phone.set_default_timeout(WAIT_MS)
        shots["web_phone.png"] = search_shot(phone.new_page(), url, args.query)
        phone.close()
    for name, png in shots.items():
        size = save_small(png, args.out / name)
        print(f"{args.out / name}: {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
