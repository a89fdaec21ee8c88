// The analyses of the bundle's report, from /v1/stats: the corpus, the filter report (what was dropped and
// why), language shares, the top words overall and per language, the attraction ranking, the word map.
// Bars are drawn as HTML (their numbers stay text); the word map is the report's PNG.
import { el, formatNumber, searchHref, stats } from "./common.js";

// What each filter of the trainer drops (train/filters.py, train/assemble.py).
const REASONS = {
  no_caption: "no caption",
  short_caption: "caption too short",
  language: "not in a kept language",
  user: "over the posts allowed per user",
  city: "about another city",
  duplicate: "the same photo again",
  unreadable: "photo unreadable",
  no_known_words: "no word the text space knows",
  encode_failed: "the photo could not be encoded",
};

function bars(rows, { link = false, percent = false } = {}) {
  const max = Math.max(1, ...rows.map((r) => r.value));
  return el("ol", { className: "bars" }, ...rows.map((row) => {
    const fill = el("div", { className: "fill" });
    fill.style.setProperty("--w", ((100 * row.value) / max).toFixed(2) + "%");
    const name = link ? el("a", { href: searchHref(row.name, row.lang) }, row.name) : row.name;
    const shown = percent ? (100 * row.share).toFixed(1) + " %" : formatNumber(row.value);
    return el("li", {}, el("span", { className: "name", title: row.name }, name),
      el("div", { className: "track", "aria-hidden": "true" }, fill), el("span", { className: "n" }, shown));
  }));
}

function table(rows) {
  return el("table", { className: "kv" }, el("tbody", {}, ...rows.map(([key, value]) =>
    el("tr", {}, el("th", { scope: "row" }, key),
      el("td", { className: typeof value === "number" ? "n" : "" },
        typeof value === "number" ? formatNumber(value) : value)))));
}

function box(title, ...children) {
  return el("section", {}, el("h2", {}, title), ...children);
}

function reportImage(info, file, alt) {
  if (!(info.report_files || []).includes(file)) return null;
  const url = `/v1/report/${file}?v=${encodeURIComponent(info.version)}`;
  return el("a", { href: url }, el("img", { src: url, alt, loading: "lazy" }));
}

function corpus(info) {
  const report = info.report || {};
  const rows = [
    ["Posts kept", (report.corpus && report.corpus.posts) ?? info.n_images],
    ["Photos", info.n_images],
    ["Words in the space", info.n_words],
  ];
  if (report.vocabulary) rows.push(["Content words in the captions", report.vocabulary.corpus_content_words]);
  if (report.corpus && report.corpus.captions) rows.push(["Captions", report.corpus.captions]);
  rows.push(["Bundle", info.version]);
  if (info.created) rows.push(["Built", String(info.created)]);
  return box("The corpus", table(rows));
}

function filters(info) {
  const f = info.filter_report || {};
  if (!Object.keys(f).length) return box("Filters", el("p", {}, "This bundle has no filter report."));
  const dropped = Object.entries(f.dropped || {});
  const rows = [["Posts read", f.total], ["Posts kept", f.kept]];
  for (const [reason, n] of dropped) rows.push([`Dropped: ${REASONS[reason] || reason}`, n]);
  const parts = [table(rows)];
  if (f.skipped_filters && f.skipped_filters.length) {
    parts.push(el("p", { className: "note" }, "Filters not applied: " + f.skipped_filters.join("; ") + "."));
  }
  if (f.split_method) parts.push(el("p", { className: "note" }, "Train/test split: " + f.split_method + "."));
  return box("What was dropped and why", ...parts);
}

function languages(info) {
  const shares = (info.report && info.report.languages) || {};
  let rows = Object.entries(shares).map(([code, v]) => ({ name: code, value: v.posts, share: v.share }));
  if (!rows.length) {
    const counts = Object.entries(info.languages || {});
    const total = counts.reduce((sum, [, n]) => sum + n, 0) || 1;
    rows = counts.map(([code, n]) => ({ name: code, value: n, share: n / total }));
  }
  return box("Languages", rows.length ? bars(rows, { percent: true }) : el("p", {}, "No language data."));
}

function topWords(info) {
  const words = (info.top_words || []).slice(0, 30).map((w) => ({ name: w.word, value: w.count }));
  return box("Top words", words.length ? bars(words, { link: true }) : el("p", {}, "No words."));
}

function byLanguage(info) {
  const groups = Object.entries((info.report && info.report.top_words_by_language) || {});
  if (groups.length < 2) return null; // one language: the same as the top words
  const section = box("Top words per language");
  for (const [code, words] of groups) {
    section.append(el("h3", {}, code),
      bars(words.slice(0, 15).map((w) => ({ name: w.word, value: w.count, lang: code })), { link: true }));
  }
  return section;
}

function attractions(info) {
  const a = (info.report && info.report.attractions) || {};
  const ranking = (a.ranking || []).filter((r) => r.mentions > 0);
  const parts = [];
  if (ranking.length) {
    parts.push(bars(ranking.map((r) => ({ name: r.name, value: r.mentions })), { link: true }));
    if (a.reference && typeof a.reference.spearman === "number") {
      parts.push(el("p", { className: "note" },
        `Spearman correlation with the reference ranking: ${a.reference.spearman.toFixed(2)}.`));
    }
  }
  if (a.note || !ranking.length) parts.push(el("p", { className: "note" }, a.note || "No attraction is mentioned."));
  return box("Attractions, by mentions", ...parts);
}

function wordMap(info) {
  const image = reportImage(info, "word_map.png", "A map of the most frequent words: related words lie close together");
  if (!image) return null;
  const section = box("The word map", image);
  section.className = "wide";
  return section;
}

function otherFigures(info) {
  const pngs = (info.report_files || []).filter((f) => f.endsWith(".png") && !f.startsWith("tsne_mosaic"));
  if (!pngs.length) return null;
  const list = el("ul", {}, ...pngs.map((f) =>
    el("li", {}, el("a", { href: `/v1/report/${f}?v=${encodeURIComponent(info.version)}` }, f))));
  return box("The report's figures", el("details", {}, el("summary", {}, `${pngs.length} PNG files`), list));
}

export async function init(root) {
  const status = root.querySelector("#analyses-status");
  const body = root.querySelector("#analyses-body");
  status.textContent = "Loading…";
  let info;
  try {
    info = await stats();
  } catch (err) {
    status.textContent = err.message;
    return;
  }
  status.textContent = "";
  const sections = [corpus(info), filters(info), languages(info), topWords(info), byLanguage(info),
    attractions(info), wordMap(info), otherFigures(info)];
  body.replaceChildren(...sections.filter(Boolean));
}
