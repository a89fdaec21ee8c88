// The page: tabs, search by words, search by photo, the photo viewer. The map and the analyses are
// modules loaded the first time their tab opens.
import { api, el, formatNumber, formatScore, searchHref, stats, thumbUrl } from "./common.js";

const PAGE = 24; // images per page of results
const RELATED = 12;
const HASHTAGS = 12;
const SIMILAR = 12;
const MAX_OFFSET = 1000; // the engine's default max_offset

const $ = (id) => document.getElementById(id);
const state = { q: "", lang: "", offset: 0, seq: 0 };

// ---- tabs ------------------------------------------------------------------------------------------
const TABS = ["search", "map", "analyses"];
const loaded = {};

function showTab(name, focus = false) {
  if (!TABS.includes(name)) name = "search";
  for (const tab of TABS) {
    const selected = tab === name;
    const link = $("tab-" + tab);
    link.setAttribute("aria-selected", String(selected));
    link.tabIndex = selected ? 0 : -1;
    $(tab).hidden = !selected;
  }
  if (focus) $("tab-" + name).focus();
  if (name !== "search" && !loaded[name]) {
    loaded[name] = import(`./${name}.js`).then((module) => module.init($(name), openPhoto));
  }
}

function setupTabs() {
  for (const tab of TABS) {
    $("tab-" + tab).addEventListener("click", (event) => {
      event.preventDefault();
      history.replaceState(history.state, "", location.pathname + location.search + (tab === "search" ? "" : "#" + tab));
      showTab(tab);
    });
  }
  // Arrow keys move between tabs (the WAI-ARIA tabs pattern).
  document.querySelector(".tabs").addEventListener("keydown", (event) => {
    const current = TABS.findIndex((t) => $("tab-" + t).getAttribute("aria-selected") === "true");
    let next = null;
    if (event.key === "ArrowRight") next = (current + 1) % TABS.length;
    if (event.key === "ArrowLeft") next = (current + TABS.length - 1) % TABS.length;
    if (next === null) return;
    event.preventDefault();
    $("tab-" + TABS[next]).click();
    $("tab-" + TABS[next]).focus();
  });
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
}

// ---- results -----------------------------------------------------------------------------------------
function card(hit, size = 320) {
  const img = el("img", { src: thumbUrl(hit, size), alt: hit.caption || "photo", loading: "lazy" });
  const open = el("button", { type: "button", className: "thumb", title: "Open this photo" }, img);
  open.addEventListener("click", () => openPhoto(hit.id));
  const meta = el("p", { className: "meta" },
    el("span", { className: "score" }, formatScore(hit.score)), hit.lang ? " · " + hit.lang : "");
  return el("li", { className: "card", dataset: { id: hit.id } },
    open, el("p", { className: "caption" }, hit.caption || ""), meta);
}

function setStatus(...parts) {
  $("status").replaceChildren(...parts.filter((p) => p !== null && p !== undefined && p !== ""));
}

/** "Showing results for …", unknown words and weak matches, from an engine answer. */
function explain(answer, q) {
  const parts = [];
  const corrected = answer.corrected || {};
  const fixes = Object.entries(corrected);
  if (fixes.length) {
    const replace = (word) => {
      const sign = word.startsWith("-") ? "-" : "";
      const bare = sign ? word.slice(1) : word;
      const hit = corrected[bare] ?? corrected[bare.toLowerCase()];
      return hit === undefined ? word : sign + hit;
    };
    const unknown = new Set(answer.unknown || []);
    const known = (word) => !unknown.has(word.replace(/^-/, "").toLowerCase());
    const shown = q.split(/\s+/).filter(Boolean).filter(known).map(replace).join(" ");
    parts.push(el("span", {}, "Showing results for ", el("span", { className: "fixed" }, shown),
      " (" + fixes.map(([asked, known]) => `${asked} → ${known}`).join(", ") + "). "));
  }
  if (answer.unknown && answer.unknown.length) {
    parts.push(el("span", { className: "warn" },
      "Not known in this topic: " + answer.unknown.join(", ") + ". "));
  }
  if (answer.confident === false && answer.images && answer.images.length) {
    parts.push(el("span", { className: "warn" }, "These are weak matches. "));
  }
  return parts;
}

async function runSearch(q, lang) {
  const seq = ++state.seq;
  Object.assign(state, { q, lang, offset: 0 });
  $("q").value = q;
  $("lang").value = lang;
  $("photo-result").hidden = true;
  $("results").replaceChildren();
  $("more").hidden = true;
  if (!q.trim()) {
    setStatus("");
    $("related-box").hidden = true;
    return;
  }
  document.title = `${q} · topicspace`;
  setStatus("Searching…");
  const params = new URLSearchParams({ q, k: String(PAGE), offset: "0" });
  if (lang) params.set("lang", lang);
  const images = api("/v1/images?" + params);
  const related = api("/v1/related?" + new URLSearchParams({ q, k: String(RELATED) }));
  try {
    const answer = await images;
    if (seq !== state.seq) return;
    showImages(answer, q, true);
  } catch (err) {
    if (seq === state.seq) setStatus(el("span", { className: "warn" }, err.message));
  }
  try {
    const words = await related;
    if (seq === state.seq) showRelated(words.words, lang);
  } catch (err) {
    if (seq === state.seq) $("related-box").hidden = true;
  }
}

function showImages(answer, q, first) {
  const hits = answer.images || [];
  $("results").append(...hits.map((hit) => card(hit)));
  const shown = $("results").children.length;
  if (first) {
    const count = shown ? `${shown} photo${shown === 1 ? "" : "s"}` : "No photos";
    setStatus(...explain(answer, q), count + (shown ? "" : " for these words") + ".");
    performance.mark("first-results");
  } else {
    setStatus(...explain(answer, q), `${shown} photos.`);
  }
  $("more").hidden = hits.length < PAGE || state.offset + PAGE > MAX_OFFSET;
}

async function more() {
  const seq = state.seq;
  state.offset += PAGE;
  const params = new URLSearchParams({ q: state.q, k: String(PAGE), offset: String(state.offset) });
  if (state.lang) params.set("lang", state.lang);
  $("more").disabled = true;
  try {
    const answer = await api("/v1/images?" + params);
    if (seq === state.seq) showImages(answer, state.q, false);
  } catch (err) {
    setStatus(el("span", { className: "warn" }, err.message));
  } finally {
    $("more").disabled = false;
  }
}

function wordItem(word, score, lang) {
  return el("li", {}, el("a", { href: searchHref(word, lang) }, word),
    el("span", { className: "score" }, formatScore(score)));
}

function showRelated(words, lang) {
  $("related").replaceChildren(...words.map((w) => wordItem(w.word, w.score, lang)));
  $("related-box").hidden = words.length === 0;
}

// ---- a photo: hashtags and similar photos -----------------------------------------------------------
let previewUrl = null;

async function searchPhoto(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    setStatus(el("span", { className: "warn" }, `${file.name} is not an image.`));
    return;
  }
  const seq = ++state.seq;
  Object.assign(state, { q: "", offset: 0 });
  $("q").value = "";
  history.pushState(null, "", "/");
  document.title = "topicspace";
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  $("photo-preview").src = previewUrl;
  $("hashtags").replaceChildren();
  $("photo-result").hidden = false;
  $("results").replaceChildren();
  $("related-box").hidden = true;
  $("more").hidden = true;
  setStatus("Looking at your photo…");
  const send = (path, k) => api(`${path}?k=${k}`, {
    method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
  });
  try {
    const [tags, similar] = await Promise.all([send("/v1/hashtags", HASHTAGS), send("/v1/similar", PAGE)]);
    if (seq !== state.seq) return;
    $("hashtags").replaceChildren(...tags.hashtags.map((t) =>
      el("li", {}, el("a", { href: searchHref(t.word), title: formatScore(t.score) }, "#" + t.word))));
    $("results").append(...similar.images.map((hit) => card(hit)));
    setStatus(`${similar.images.length} similar photos.`);
  } catch (err) {
    if (seq === state.seq) setStatus(el("span", { className: "warn" }, err.message));
  }
}

function setupPhoto() {
  const input = $("photo");
  input.addEventListener("change", () => searchPhoto(input.files[0]));
  const drop = $("drop");
  const over = (on) => (event) => {
    event.preventDefault();
    drop.classList.toggle("over", on);
  };
  drop.addEventListener("dragenter", over(true));
  drop.addEventListener("dragover", over(true));
  drop.addEventListener("dragleave", over(false));
  // A photo dropped anywhere on the page (the drop zone included) is searched, instead of the browser
  // opening it in place of the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    over(false)(event);
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (!file) return;
    showTab("search");
    searchPhoto(file);
  });
}

// ---- the viewer: one photo, its caption and similar photos -------------------------------------------
let viewerSeq = 0;

export async function openPhoto(id) {
  const seq = ++viewerSeq;
  const dialog = $("viewer");
  const url = "/v1/images/" + encodeURIComponent(id);
  $("viewer-img").src = url + "?size=640";
  $("viewer-img").alt = "";
  $("viewer-link").href = url;
  $("viewer-caption").textContent = "…";
  $("viewer-meta").textContent = "";
  $("viewer-similar").replaceChildren();
  if (!dialog.open) dialog.showModal();
  try {
    const answer = await api(`/v1/similar/${encodeURIComponent(id)}?k=${SIMILAR}`);
    if (seq !== viewerSeq) return;
    const image = answer.image;
    $("viewer-caption").textContent = image.caption || "(no caption)";
    $("viewer-img").alt = image.caption || "photo";
    $("viewer-meta").textContent = [image.lang, image.user ? "by " + image.user : null, "id " + image.id]
      .filter(Boolean).join(" · ");
    $("viewer-similar").replaceChildren(...answer.images.map((hit) => card(hit, 160)));
  } catch (err) {
    if (seq === viewerSeq) $("viewer-caption").textContent = err.message;
  }
}

function setupViewer() {
  const dialog = $("viewer");
  $("viewer-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
}

// ---- start -------------------------------------------------------------------------------------------
function fromAddress() {
  const params = new URLSearchParams(location.search);
  return { q: params.get("q") || "", lang: (params.get("lang") || "").toLowerCase() };
}

async function fillFromStats() {
  try {
    const info = await stats();
    $("version").textContent = info.version;
    const topic = info.corpus && typeof info.corpus === "object" ? info.corpus.topic || info.corpus.name : null;
    if (topic) $("topic").textContent = String(topic);
    const select = $("lang");
    const wanted = fromAddress().lang;
    const codes = Object.keys(info.languages || {}).filter((c) => c && c !== "unknown");
    if (wanted && !codes.includes(wanted)) codes.push(wanted);
    for (const code of codes) {
      const n = info.languages[code];
      const posts = typeof n === "number" ? n : n && n.posts;
      select.append(el("option", { value: code }, posts ? `${code} (${formatNumber(posts)})` : code));
    }
    select.value = state.lang || wanted;
  } catch (err) {
    $("version").textContent = "none (" + err.message + ")";
  }
}

function start() {
  setupTabs();
  setupPhoto();
  setupViewer();
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("q").value.trim();
    const lang = $("lang").value;
    history.pushState(null, "", searchHref(q, lang));
    runSearch(q, lang);
  });
  $("more").addEventListener("click", more);
  window.addEventListener("popstate", () => {
    const { q, lang } = fromAddress();
    runSearch(q, lang);
    showTab(location.hash.slice(1));
  });
  const { q, lang } = fromAddress();
  showTab(location.hash.slice(1));
  fillFromStats();
  if (q) runSearch(q, lang);
  else $("q").focus();
}

start();
