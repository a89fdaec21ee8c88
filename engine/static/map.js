// The photo map: the bundle's t-SNE mosaic (report/tsne_mosaic_<size>.png), zoomable and pannable; a
// click (or Enter on the keyboard cursor) opens the photo of that grid cell. /map.json says which photo
// lies in each cell. A sharper mosaic is loaded when the zoom needs it.
import { api, formatNumber } from "./common.js";

const MAX_ZOOM = 16;
const DRAG_PX = 4; // a pointer that moved less than this between down and up is a click

export async function init(root, openPhoto) {
  const note = root.querySelector("#map-note");
  const view = root.querySelector("#map-view");
  const stage = root.querySelector("#map-stage");
  const img = root.querySelector("#map-img");
  const cursorBox = root.querySelector("#map-cursor");
  const status = root.querySelector("#map-status");
  let data;
  try {
    data = await api("/map.json");
  } catch (err) {
    note.textContent = err.message;
    view.hidden = true;
    root.querySelector(".map-tools").hidden = true;
    return;
  }
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
  const centre = () => [view.clientWidth / 2, view.clientHeight / 2];

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

  // Pointers: one drags, two pinch; a press that barely moved is a click on a tile.
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
      const cell = cellAt(event.clientX - box.left, event.clientY - box.top);
      if (cell) Object.assign(cursor, cell, { visible: true });
      placeCursor();
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
    view2d.x += event.clientX - previous.x;
    view2d.y += event.clientY - previous.y;
    clamp();
    apply();
  });
  const release = (event) => {
    pointers.delete(event.pointerId);
    view.classList.remove("dragging");
    if (pointers.size < 2) pinch = null;
    if (event.type === "pointerup" && press && !press.moved && pointers.size === 0) {
      const box = view.getBoundingClientRect();
      open(cellAt(event.clientX - box.left, event.clientY - box.top));
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
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (moves[event.key]) {
      const [dc, dr] = moves[event.key];
      cursor.col = Math.min(grid - 1, Math.max(0, cursor.col + dc));
      cursor.row = Math.min(grid - 1, Math.max(0, cursor.row + dr));
      cursor.visible = true;
      placeCursor();
      follow();
    } else if (event.key === "Enter" || event.key === " ") {
      cursor.visible = true;
      placeCursor();
      open(cursor);
    } else if (event.key === "+" || event.key === "=") {
      zoomAt(1.5, ...centre());
    } else if (event.key === "-" || event.key === "_") {
      zoomAt(1 / 1.5, ...centre());
    } else if (event.key === "0") {
      fit();
    } else {
      return;
    }
    event.preventDefault();
  });

  function fit() {
    view2d.zoom = 1;
    layout();
  }

  root.querySelector("#zoom-in").addEventListener("click", () => zoomAt(1.5, ...centre()));
  root.querySelector("#zoom-out").addEventListener("click", () => zoomAt(1 / 1.5, ...centre()));
  root.querySelector("#zoom-fit").addEventListener("click", fit);
  new ResizeObserver(() => layout()).observe(view);
  layout();
  placeCursor();
  view.dataset.ready = "1";
}
