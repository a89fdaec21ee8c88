"""The web page in a real headless browser: Debian's chromium driven by playwright, against ``python -m
engine`` on (a copy of) the small test bundle.

What a person does: types "dog" and gets dog photos, follows a related word, opens a shared search link,
sends a dog photo (file picker and drag-and-drop) and gets "#dog", zooms the photo map from its overview
down to single photos and clicks one to see that photo and its caption, reads the analyses, uses the map
from the keyboard, reloads after an admin switched bundles and sees the new one (a bundle without map
tiles: its mosaic, clicked), and a caption holding ``<script>`` shows as text. At a phone's width nothing
scrolls sideways.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from space import bundle
from tests.engine.helpers import TOKEN, engine_process, get_json, post_admin, publish_copy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOG = re.compile(r"\b(dog|dogs|puppy|puppies)\b", re.I)
WAIT_MS = 60_000  # generous: CI's two cores may be busy
# Functions, not expressions: playwright evaluates a bare expression with eval, which the page's CSP refuses.
# The images on screen (the others are lazy) have loaded.
LOADED = ("() => [...document.querySelectorAll('{sel}')]"
          ".filter(i => i.getBoundingClientRect().top < innerHeight)"
          ".every(i => i.complete && i.naturalWidth > 0)")
HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> '

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web_models(tmp_path_factory: pytest.TempPathFactory, small_bundle_models: Path) -> Path:
    dst = tmp_path_factory.mktemp("web") / "models"
    shutil.copytree(small_bundle_models, dst)
    return dst


@pytest.fixture(scope="module")
def engine_url(web_models: Path) -> Iterator[str]:
    with engine_process(web_models, ENGINE_ADMIN_TOKEN=TOKEN) as (_, url):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/setup.sh does it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield pg
    context.close()
    # No script error and no CSP violation on any page of the test.
    assert errors == []


def _items(models: Path) -> list[dict[str, Any]]:
    return list(json.loads((bundle.active_path(models) / bundle.IMAGE_META).read_text())["items"])


def _captions(page: Any) -> list[str]:
    return [str(c) for c in page.locator("#results .caption").all_text_contents()]


def test_typing_dog_shows_dog_photos_and_related_words(page: Any, engine_url: str) -> None:
    page.goto(engine_url + "/")
    page.fill("#q", "dog")
    page.press("#q", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#results li').length >= 6")
    captions = _captions(page)
    assert sum(bool(DOG.search(c)) for c in captions) >= 6, captions
    assert page.url == engine_url + "/?q=dog"
    page.wait_for_function(LOADED.format(sel="#results img"))
    related = page.locator("#related a")
    related.first.wait_for()
    word = related.first.text_content()
    related.first.click()  # a related word is a search of its own
    page.wait_for_url(re.compile(r"\?q="))
    assert page.input_value("#q") == word
    page.wait_for_function("() => document.querySelectorAll('#results li').length > 0")
    page.go_back()
    page.wait_for_function("() => document.getElementById('q').value === 'dog'")


def test_a_search_link_opens_with_its_results_and_pages_on(page: Any, engine_url: str) -> None:
    page.goto(engine_url + "/?q=dog")
    page.wait_for_function("() => document.querySelectorAll('#results li').length >= 6")
    first = page.locator("#results li").count()
    page.click("#more")
    page.wait_for_function(f"() => document.querySelectorAll('#results li').length > {first}")
    ids = page.locator("#results li").evaluate_all("lis => lis.map(li => li.dataset.id)")
    assert len(ids) == len(set(ids))  # the next page continues the ranking
    page.goto(engine_url + "/?q=dgos+qqqzzz")  # a misspelling the engine corrects, a word it cannot
    page.wait_for_function("() => document.getElementById('status').textContent.includes('qqqzzz')")
    status = page.text_content("#status") or ""
    assert "Showing results for dogs (dgos → dogs)" in status and "Not known in this topic: qqqzzz" in status


def _dog_photo(models: Path) -> Path:
    return Path(next(it["path"] for it in _items(models) if DOG.search(it.get("caption", ""))))


def test_a_dog_photo_gets_its_hashtags_and_similar_photos(
    page: Any, engine_url: str, web_models: Path
) -> None:
    photo = _dog_photo(web_models)
    page.goto(engine_url + "/")
    page.set_input_files("#photo", str(photo))
    page.wait_for_function("() => document.querySelectorAll('#hashtags a').length > 0")
    tags = page.locator("#hashtags a").all_text_contents()
    assert "#dog" in tags, tags
    page.wait_for_function("() => document.querySelectorAll('#results li').length > 0")
    # The same photo dropped on the drop zone.
    page.goto(engine_url + "/")
    data = base64.b64encode(photo.read_bytes()).decode()
    page.evaluate("""async (data) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dog.jpg", { type: "image/jpeg" }));
        const drop = new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true });
        document.getElementById("drop").dispatchEvent(drop);
    }""", data)
    page.wait_for_function("() => document.querySelectorAll('#hashtags a').length > 0")
    assert "#dog" in page.locator("#hashtags a").all_text_contents()
    assert page.locator("#photo-preview").evaluate("img => img.src.startsWith('blob:')")


def _open_map(page: Any, engine_url: str) -> dict[str, Any]:
    page.goto(engine_url + "/#map")
    page.wait_for_selector("#map-view[data-ready='1']")
    data = get_json(engine_url + "/map.json")
    if data.get("tiles"):
        page.wait_for_function("() => [...document.querySelectorAll('#map-stage .map-tile')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
    else:
        page.wait_for_function("() => document.getElementById('map-img').complete")
    return data


def _click_cell(page: Any, engine_url: str, data: dict[str, Any], cell: int) -> str:
    """Click the middle of grid cell ``cell`` on the mosaic shown, whatever its zoom and size; wait for the
    viewer to show that photo's caption; return the caption."""
    grid = data["grid"]
    col, row = cell % grid, cell // grid
    size = int(page.get_attribute("#map-img", "data-size") or 0)
    mosaic = next(m for m in data["mosaics"] if m["size"] == size)
    box = page.locator("#map-img").bounding_box()  # as transformed: zoom and pan included
    fx = (mosaic["margin"] + (col + 0.5) * mosaic["tile"]) / size
    fy = (mosaic["margin"] + (row + 0.5) * mosaic["tile"]) / size
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    return _shows(page, engine_url, data["cells"][cell])


def _shows(page: Any, engine_url: str, image_id: str) -> str:
    """Wait for the viewer to show photo ``image_id`` with its caption; return the caption."""
    page.wait_for_selector("#viewer[open]")
    caption = str(get_json(f"{engine_url}/v1/similar/{image_id}?k=1")["image"]["caption"])
    page.wait_for_function("(c) => document.getElementById('viewer-caption').textContent === c", arg=caption)
    page.wait_for_function("() => document.getElementById('viewer-img').naturalWidth > 0")
    assert image_id in (page.get_attribute("#viewer-img", "src") or "")
    return caption


def _cell_id(engine_url: str, data: dict[str, Any], col: int, row: int) -> str | None:
    url = data["tiles"]["cell_url"].replace("{col}", str(col)).replace("{row}", str(row))
    found = get_json(engine_url + url)["id"]
    return None if found is None else str(found)


def test_the_map_zooms_from_the_overview_to_single_photos(page: Any, engine_url: str) -> None:
    data = _open_map(page, engine_url)
    tiles = data["tiles"]
    deepest = len(tiles["levels"]) - 1
    assert page.get_attribute("#map-view", "data-kind") == "tiles"
    assert f"All {data['images']} photos" in (page.text_content("#map-note") or "")
    overview = int(page.get_attribute("#map-view", "data-level") or -1)
    assert overview < deepest and page.locator("#map-img").is_hidden()
    for _ in range(12):  # the zoom button, until the deepest level's tiles are drawn
        if page.get_attribute("#map-view", "data-level") == str(deepest):
            break
        page.click("#zoom-in")
    assert page.get_attribute("#map-view", "data-level") == str(deepest)
    page.wait_for_function("(z) => [...document.querySelectorAll(`#map-stage .map-tile[data-z='${z}']`)]"
                           ".some(i => i.complete && i.naturalWidth > 0)", arg=str(deepest))
    # A tile of the deepest level in view: the photo in one of its cells, clicked where it is drawn.
    view = page.locator("#map-view").bounding_box()
    per_tile = tiles["tile"] // tiles["cell"]
    for tile in page.locator(f"#map-stage .map-tile[data-z='{deepest}']").all():
        box = tile.bounding_box()
        x, y = (int(v) for v in re.findall(r"/(\d+)/(\d+)\.jpg", tile.get_attribute("src") or "")[0])
        side = box["width"] / per_tile
        for r in range(per_tile):
            for c in range(per_tile):
                px, py = box["x"] + (c + 0.5) * side, box["y"] + (r + 0.5) * side
                inside = view["x"] + 4 < px < view["x"] + view["width"] - 4 and \
                    view["y"] + 4 < py < view["y"] + view["height"] - 4
                image_id = _cell_id(engine_url, data, x * per_tile + c, y * per_tile + r) if inside else None
                if image_id:
                    page.mouse.click(px, py)
                    _shows(page, engine_url, image_id)
                    page.wait_for_function("() => document.querySelectorAll('#viewer-similar li').length > 0")
                    page.keyboard.press("Escape")
                    page.wait_for_selector("#viewer", state="hidden")
                    return
    raise AssertionError("no photo in view at the deepest level")


def test_the_map_from_the_keyboard(page: Any, engine_url: str) -> None:
    data = _open_map(page, engine_url)
    grid = data["grid"]
    page.focus("#map-view")
    level = page.get_attribute("#map-view", "data-level")
    page.keyboard.press("+")
    page.keyboard.press("+")
    page.wait_for_function("(z) => document.getElementById('map-view').dataset.level !== z", arg=level)
    page.keyboard.press("0")
    page.wait_for_function("(z) => document.getElementById('map-view').dataset.level === z", arg=level)
    # The cursor starts at the middle cell; walk left along its row to a cell holding a photo.
    row, col = grid // 2, grid // 2
    while not (image_id := _cell_id(engine_url, data, col, row)):
        page.keyboard.press("ArrowLeft")
        col -= 1
        assert col >= 0, "no photo on the middle row"
    page.keyboard.press("Enter")
    _shows(page, engine_url, image_id)
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")


def test_the_analyses(page: Any, engine_url: str) -> None:
    page.goto(engine_url + "/")
    page.click("#tab-analyses")
    assert page.url.endswith("#analyses")
    page.wait_for_selector("#analyses-body h2")
    headings = page.locator("#analyses-body h2").all_text_contents()
    for title in ("The corpus", "What was dropped and why", "Languages", "Top words",
                  "Attractions, by mentions", "The word map"):
        assert title in headings, headings
    stats = get_json(engine_url + "/v1/stats")
    top = stats["top_words"][0]["word"]
    assert page.locator("#analyses .bars a").first.text_content() == top
    page.locator("#analyses img").last.scroll_into_view_if_needed()
    page.wait_for_function(LOADED.format(sel="#analyses img"))


def test_a_phone_width_never_scrolls_sideways(browser: Any, engine_url: str) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        for address, ready in (("/?q=dog", "#results li"), ("/#map", "#map-view[data-ready='1']"),
                               ("/#analyses", "#analyses-body h2")):
            page.goto(engine_url + address)
            page.wait_for_selector(ready)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, (address, width)
    finally:
        context.close()


def test_a_reload_shows_another_bundle_and_captions_stay_text(
    page: Any, engine_url: str, web_models: Path
) -> None:
    page.goto(engine_url + "/?q=dog")
    page.wait_for_selector("#results li")
    before = page.text_content("#version")

    def hostile(staged: Path) -> None:
        meta_path = staged / bundle.IMAGE_META
        meta = json.loads(meta_path.read_text())
        for item in meta["items"]:
            item["caption"] = HOSTILE + item["caption"]
        meta_path.write_text(json.dumps(meta))
        _add_mosaic(staged, [item["path"] for item in meta["items"]], 2048)
        shutil.rmtree(staged / bundle.REPORT_DIR / "map")  # as bundles were before the map's tiles

    version = publish_copy(web_models, bundle.active_path(web_models), activate_it=False, edit=hostile)
    post_admin(f"{engine_url}/v1/admin/activate?version={version}")  # as an admin would
    page.reload()
    page.wait_for_function("(v) => document.getElementById('version').textContent === v", arg=version)
    assert before != version
    page.wait_for_selector("#results li")
    captions = _captions(page)
    assert captions and all(c.startswith(HOSTILE) for c in captions), captions[:2]
    assert page.evaluate("window.__xss") is None
    assert page.locator("main script, main img[src='x']").count() == 0
    page.locator("#results button.thumb").first.click()
    page.wait_for_function("() => document.getElementById('viewer-caption').textContent.startsWith('<scr')")
    assert page.evaluate("window.__xss") is None
    # The map follows the new bundle too: one without tiles shows its mosaic, and zoomed in it loads the
    # sharper mosaic, whose tiles have another size and margin: a click still opens the photo of the cell
    # under the pointer.
    data = _open_map(page, engine_url)
    assert page.get_attribute("#map-view", "data-kind") == "mosaic" and "tiles" not in data
    _click_cell(page, engine_url, data, next(i for i, c in enumerate(data["cells"]) if c))
    page.wait_for_function("() => document.querySelectorAll('#viewer-similar li').length > 0")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    assert f"v={version}" in (page.get_attribute("#map-img", "src") or "")
    assert [m["size"] for m in data["mosaics"]] == [1024, 2048]
    page.click("#zoom-in")
    page.click("#zoom-in")
    page.wait_for_selector("#map-img[data-size='2048']")
    grid, middle = data["grid"], (data["grid"] - 1) / 2
    cell = min((i for i, c in enumerate(data["cells"]) if c),
               key=lambda i: (i % grid - middle) ** 2 + (i // grid - middle) ** 2)
    assert _click_cell(page, engine_url, data, cell).startswith(HOSTILE)
    assert page.evaluate("window.__xss") is None


def _add_mosaic(bundle_dir: Path, paths: list[str], size: int) -> None:
    """Draw the bundle's layout at another size with the report's own code, and list it in the layout."""
    from train.report.mosaic import Layout, draw_mosaics

    layout_path = bundle_dir / bundle.REPORT_DIR / "tsne_layout.json"
    saved = json.loads(layout_path.read_text())
    items = saved["items"]
    layout = Layout(np.array([it["index"] for it in items]), np.array([[it["x"], it["y"]] for it in items]),
                    np.array([[it["col"], it["row"]] for it in items]), saved["grid"], saved["assignment"],
                    saved["images"])
    name = f"tsne_mosaic_{size}.png"
    drawn = draw_mosaics(layout, paths, [size], [bundle_dir / bundle.REPORT_DIR / name])
    saved["mosaics"].update(drawn["sizes"])
    layout_path.write_text(json.dumps(saved))
