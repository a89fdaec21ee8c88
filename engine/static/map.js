// The photo map, zoomable and pannable; a click (or Enter on the keyboard cursor) opens the photo of that
// grid cell. Two kinds, as /map.json says:
// - tiles: every photo of the bundle, a tile pyramid (report/map/) from the overview down to single
//   photos; the tiles of the level that matches the zoom are placed over the view, the overview tile
//   always under them (nothing blank while a level loads); a click asks /map/<version>/cell/<col>/<row>
//   which photo lies there;
// - a mosaic (older bundles): the bundle's t-SNE mosaic (report/tsne_mosaic_<size>.png) under a CSS
//   transform, /map.json listing the photo of each cell; a sharper mosaic is loaded when the zoom needs it.
import { api, el, formatNumber } from "./common.js";

const MAX_ZOOM = 16;
const DRAG_PX = 4; // a pointer that moved less than this between down and up is a click
const MAX_CELL_PX = 160; // the tiled map zooms in until one photo is this wide on screen

export async function init(root, openPhoto) {
  const note = root.querySelector("#map-note");
  const view = root.querySelector("#map-view");
  let data;
  try {
    data = await api("/map.json");
  } catch (err) {
    note.textContent = err.message;
    view.hidden = true;
    root.querySelector(".map-tools").hidden = true;
    return;
  }
  if (data.tiles) {
    tiled(root, data, openPhoto);
  } else {
    mosaic(root, data, openPhoto);
  }
}

/** Pointer drag and pinch, wheel zoom and the keyboard over the map's view: the same for both kinds. */
function controls(view, { pan, zoomAt, click, hover, key }) {
  const pointers = new Map();
  let press = null;
  let pinch = null;
  view.addEventListener("pointerdown", (event) => {
    view.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pointers.size === 1) press = { x: event.clientX, y: event.clientY, moved: false };
    if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      pinch = { distance: Math.hypot(a.x - b.x, a.y - b.y) };
      press = null;
    }
  });
  view.addEventListener("pointermove", (event) => {
    const box = view.getBoundingClientRect();
    const previous = pointers.get(event.pointerId);
    if (!previous) {
      hover(event.clientX - box.left, event.clientY - box.top);
      return;
    }
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    if (pinch && pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      const distance = Math.hypot(a.x - b.x, a.y - b.y);
      zoomAt(distance / (pinch.distance || distance), (a.x + b.x) / 2 - box.left, (a.y + b.y) / 2 - box.top);
      pinch.distance = distance;
      return;
    }
    if (press && !press.moved && Math.hypot(event.clientX - press.x, event.clientY - press.y) < DRAG_PX) return;
    if (press) press.moved = true;
    view.classList.add("dragging");
    pan(event.clientX - previous.x, event.clientY - previous.y);
  });
  const release = (event) => {
    pointers.delete(event.pointerId);
    view.classList.remove("dragging");
    if (pointers.size < 2) pinch = null;
    if (event.type === "pointerup" && press && !press.moved && pointers.size === 0) {
      const box = view.getBoundingClientRect();
      click(event.clientX - box.left, event.clientY - box.top);
    }
    if (pointers.size === 0) press = null;
  };
  view.addEventListener("pointerup", release);
  view.addEventListener("pointercancel", release);
  view.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = view.getBoundingClientRect();
    zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  view.addEventListener("keydown", (event) => {
    if (key(event.key)) event.preventDefault();
  });
}

const MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

/** A grid map's controls (both kinds): drag, pinch and wheel, hover and click on a photo, the arrow keys
 * moving a cursor from photo to photo (Enter opens it), + - 0 and the zoom buttons. ``m`` holds the map's
 * own view2d, cursor, grid size and functions. */
function gridControls(root, view, m) {
  const centre = () => [view.clientWidth / 2, view.clientHeight / 2];
  controls(view, {
    pan(dx, dy) {
      m.view2d.x += dx;
      m.view2d.y += dy;
      m.clamp();
      m.redraw();
    },
    zoomAt: m.zoomAt,
    click: (px, py) => m.open(m.cellAt(px, py)),
    hover(px, py) {
      const cell = m.cellAt(px, py);
      if (cell) Object.assign(m.cursor, cell, { visible: true });
      m.placeCursor();
    },
    key(name) {
      if (MOVES[name]) {
        const [dc, dr] = MOVES[name];
        m.cursor.col = Math.min(m.grid - 1, Math.max(0, m.cursor.col + dc));
        m.cursor.row = Math.min(m.grid - 1, Math.max(0, m.cursor.row + dr));
        m.cursor.visible = true;
        m.placeCursor();
        m.follow();
      } else if (name === "Enter" || name === " ") {
        m.cursor.visible = true;
        m.placeCursor();
        m.open(m.cursor);
      } else if (name === "+" || name === "=") {
        m.zoomAt(1.5, ...centre());
      } else if (name === "-" || name === "_") {
        m.zoomAt(1 / 1.5, ...centre());
      } else if (name === "0") {
        m.fit();
      } else {
        return false;
      }
      return true;
    },
  });
  root.querySelector("#zoom-in").addEventListener("click", () => m.zoomAt(1.5, ...centre()));
  root.querySelector("#zoom-out").addEventListener("click", () => m.zoomAt(1 / 1.5, ...centre()));
  root.querySelector("#zoom-fit").addEventListener("click", m.fit);
}

/** The tile pyramid of every photo. */
function tiled(root, data, openPhoto) {
  const note = root.querySelector("#map-note");
  const view = root.querySelector("#map-view");
  const stage = root.querySelector("#map-stage");
  const cursorBox = root.querySelector("#map-cursor");
  const status = root.querySelector("#map-status");
  const { cell, tile, levels, url, cell_url: cellUrl } = data.tiles;
  const grid = data.grid;
  const world = levels[levels.length - 1].size; // the deepest level's pixels: grid × cell
  note.textContent = `All ${formatNumber(data.laid_out)} photos, one per square; similar ones lie close ` +
    "together. Zoom in to see each photo.";
  root.querySelector("#map-img").hidden = true;
  stage.classList.add("tiled");
  const layer = el("div", { className: "map-tiles" });
  stage.prepend(layer);
  const shown = new Map(); // "z/x/y" → img
  // scale: CSS pixels per world pixel; (x, y): where the world's origin is in the view.
  const view2d = { scale: 1, fit: 1, x: 0, y: 0 };
  const cursor = { col: Math.floor(grid / 2), row: Math.floor(grid / 2), visible: false };
  const tileUrl = (z, x, y) => url.replace("{z}", z).replace("{x}", x).replace("{y}", y);

  function layout() {
    const side = Math.min(view.clientWidth, view.clientHeight);
    const fit = side / world;
    const zoom = view2d.scale / view2d.fit;
    view2d.fit = fit;
    view2d.scale = Math.min(fit * zoom, maxScale());
    clamp();
    draw();
  }

  const maxScale = () => Math.max(view2d.fit, MAX_CELL_PX / cell);

  function clamp() {
    const span = world * view2d.scale;
    const w = view.clientWidth;
    const h = view.clientHeight;
    view2d.x = span <= w ? (w - span) / 2 : Math.min(0, Math.max(w - span, view2d.x));
    view2d.y = span <= h ? (h - span) / 2 : Math.min(0, Math.max(h - span, view2d.y));
  }

  // The coarsest level whose pixels are at least as fine as the screen's at this zoom.
  function level() {
    const needed = world * view2d.scale * (window.devicePixelRatio || 1);
    const z = levels.findIndex((lv) => lv.size >= needed / 1.25);
    return z < 0 ? levels.length - 1 : z;
  }

  function place(img, z, x, y) {
    const k = world / levels[z].size; // world pixels per pixel of level z
    const span = tile * k * view2d.scale;
    img.style.left = view2d.x + x * span + "px";
    img.style.top = view2d.y + y * span + "px";
    img.style.width = span + "px";
    img.style.height = span + "px";
  }

  function draw() {
    const z = level();
    const wanted = new Set(["0/0/0"]);
    const k = world / levels[z].size;
    const span = tile * k * view2d.scale;
    const { cols, rows } = levels[z];
    const x0 = Math.max(0, Math.floor(-view2d.x / span));
    const y0 = Math.max(0, Math.floor(-view2d.y / span));
    const x1 = Math.min(cols - 1, Math.floor((view.clientWidth - view2d.x) / span));
    const y1 = Math.min(rows - 1, Math.floor((view.clientHeight - view2d.y) / span));
    for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) wanted.add(`${z}/${x}/${y}`);
    for (const [name, img] of shown) {
      if (!wanted.has(name)) {
        img.remove();
        shown.delete(name);
      }
    }
    for (const name of wanted) {
      let img = shown.get(name);
      const [tz, tx, ty] = name.split("/").map(Number);
      if (!img) {
        img = el("img", { className: "map-tile", alt: "", draggable: false, src: tileUrl(tz, tx, ty) });
        img.dataset.z = String(tz);
        shown.set(name, img);
        if (tz === 0) layer.prepend(img);
        else layer.append(img);
      }
      place(img, tz, tx, ty);
    }
    view.dataset.level = String(z);
    placeCursor();
  }

  function zoomAt(factor, px, py) {
    const scale = Math.min(maxScale(), Math.max(view2d.fit, view2d.scale * factor));
    const ratio = scale / view2d.scale;
    view2d.x = px - (px - view2d.x) * ratio;
    view2d.y = py - (py - view2d.y) * ratio;
    view2d.scale = scale;
    clamp();
    draw();
  }

  function cellAt(px, py) {
    const col = Math.floor((px - view2d.x) / view2d.scale / cell);
    const row = Math.floor((py - view2d.y) / view2d.scale / cell);
    return col >= 0 && row >= 0 && col < grid && row < grid ? { col, row } : null;
  }

  function placeCursor() {
    cursorBox.hidden = !cursor.visible;
    const span = cell * view2d.scale;
    cursorBox.style.left = view2d.x + cursor.col * span + "px";
    cursorBox.style.top = view2d.y + cursor.row * span + "px";
    cursorBox.style.width = span + "px";
    cursorBox.style.height = span + "px";
    cursorBox.style.outlineWidth = "2px";
  }

  async function open(where) {
    if (!where) {
      status.textContent = "No photo here.";
      return;
    }
    let answer;
    try {
      answer = await api(cellUrl.replace("{col}", where.col).replace("{row}", where.row));
    } catch (err) {
      status.textContent = err.message;
      return;
    }
    status.textContent = answer.id ? "" : "No photo in this square.";
    if (answer.id) openPhoto(answer.id);
  }

  function follow() {
    const span = cell * view2d.scale;
    const left = view2d.x + cursor.col * span;
    const top = view2d.y + cursor.row * span;
    if (left < 0) view2d.x -= left;
    if (top < 0) view2d.y -= top;
    if (left + span > view.clientWidth) view2d.x -= left + span - view.clientWidth;
    if (top + span > view.clientHeight) view2d.y -= top + span - view.clientHeight;
    clamp();
    draw();
  }

  function fit() {
    view2d.scale = view2d.fit;
    clamp();
    draw();
  }

  gridControls(root, view, { view2d, cursor, grid, clamp, redraw: draw, zoomAt, cellAt, open, placeCursor,
    follow, fit });
  new ResizeObserver(() => layout()).observe(view);
  view2d.fit = view2d.scale = Math.min(view.clientWidth, view.clientHeight) / world || 1;
  layout();
  view.dataset.kind = "tiles";
  view.dataset.ready = "1";
}

/** The mosaic of an older bundle (a sample of at most 64 × 64 photos). */
function mosaic(root, data, openPhoto) {
  const note = root.querySelector("#map-note");
  const view = root.querySelector("#map-view");
  const stage = root.querySelector("#map-stage");
  const img = root.querySelector("#map-img");
  const cursorBox = root.querySelector("#map-cursor");
  const status = root.querySelector("#map-status");
  note.textContent = data.sampled
    ? `A sample: ${formatNumber(data.laid_out)} of the ${formatNumber(data.images)} photos, drawn at random ` +
      `(the ${data.grid}×${data.grid} grid holds ${formatNumber(data.grid * data.grid)}). ` +
      "Similar photos lie close together."
    : `All ${formatNumber(data.laid_out)} photos; similar ones lie close together.`;
  const grid = data.grid;
  const mosaics = data.mosaics; // smallest first
  let shown = mosaics[0];
  const view2d = { zoom: 1, x: 0, y: 0, side: 0 };
  const cursor = { col: Math.floor(grid / 2), row: Math.floor(grid / 2), visible: false };

  img.src = shown.url;
  img.dataset.size = String(shown.size);

  function layout() {
    const side = Math.min(view.clientWidth, view.clientHeight);
    view2d.side = side;
    stage.style.width = side + "px";
    stage.style.height = side + "px";
    clamp();
    apply();
  }

  function clamp() {
    const { side, zoom } = view2d;
    const w = view.clientWidth;
    const h = view.clientHeight;
    const span = side * zoom;
    view2d.x = span <= w ? (w - span) / 2 : Math.min(0, Math.max(w - span, view2d.x));
    view2d.y = span <= h ? (h - span) / 2 : Math.min(0, Math.max(h - span, view2d.y));
  }

  function apply() {
    stage.style.transform = `translate(${view2d.x}px, ${view2d.y}px) scale(${view2d.zoom})`;
    sharpen();
  }

  // A bigger mosaic once the smaller one would be stretched on screen.
  function sharpen() {
    const needed = view2d.side * view2d.zoom * (window.devicePixelRatio || 1);
    const better = mosaics.find((m) => m.size >= needed / 1.25) || mosaics[mosaics.length - 1];
    if (better.size <= shown.size) return;
    const next = new Image();
    next.onload = () => {
      if (better.size > shown.size) {
        shown = better;
        img.src = better.url;
        img.dataset.size = String(better.size);
        placeCursor();
      }
    };
    next.src = better.url;
  }

  function zoomAt(factor, px, py) {
    const zoom = Math.min(MAX_ZOOM, Math.max(1, view2d.zoom * factor));
    const ratio = zoom / view2d.zoom;
    view2d.x = px - (px - view2d.x) * ratio;
    view2d.y = py - (py - view2d.y) * ratio;
    view2d.zoom = zoom;
    clamp();
    apply();
  }

  /** The grid cell under a point of the view (CSS pixels), or null outside the mosaic's tiles. */
  function cellAt(px, py) {
    const u = (px - view2d.x) / (view2d.side * view2d.zoom);
    const v = (py - view2d.y) / (view2d.side * view2d.zoom);
    const col = Math.floor((u * shown.size - shown.margin) / shown.tile);
    const row = Math.floor((v * shown.size - shown.margin) / shown.tile);
    return col >= 0 && row >= 0 && col < grid && row < grid ? { col, row } : null;
  }

  function placeCursor() {
    cursorBox.hidden = !cursor.visible;
    const unit = 100 / shown.size;
    cursorBox.style.left = (shown.margin + cursor.col * shown.tile) * unit + "%";
    cursorBox.style.top = (shown.margin + cursor.row * shown.tile) * unit + "%";
    cursorBox.style.width = shown.tile * unit + "%";
    cursorBox.style.height = shown.tile * unit + "%";
    cursorBox.style.outlineWidth = Math.max(1, 2 / view2d.zoom) + "px";
  }

  function open(cell) {
    const id = cell ? data.cells[cell.row * grid + cell.col] : null;
    status.textContent = id ? "" : "No photo in this cell.";
    if (id) openPhoto(id);
  }

  // Keep the keyboard cursor's cell on screen.
  function follow() {
    const size = view2d.side * view2d.zoom;
    const unit = size / shown.size;
    const left = view2d.x + (shown.margin + cursor.col * shown.tile) * unit;
    const top = view2d.y + (shown.margin + cursor.row * shown.tile) * unit;
    const tile = shown.tile * unit;
    if (left < 0) view2d.x -= left;
    if (top < 0) view2d.y -= top;
    if (left + tile > view.clientWidth) view2d.x -= left + tile - view.clientWidth;
    if (top + tile > view.clientHeight) view2d.y -= top + tile - view.clientHeight;
    clamp();
    apply();
  }

  gridControls(root, view, { view2d, cursor, grid, clamp, redraw: apply, zoomAt, cellAt, open, placeCursor,
    follow, fit: () => fit() });

  function fit() {
    view2d.zoom = 1;
    layout();
  }

  new ResizeObserver(() => layout()).observe(view);
  layout();
  placeCursor();
  view.dataset.kind = "mosaic";
  view.dataset.ready = "1";
}
