"""A scale corpus shaped like a real crawl, built from Flickr8k: ``python -m train synth``.

The original system read 623,199 Instagram posts about Barcelona and kept 325,253 (52 %). This writes
``--posts N`` posts that make every filter do that kind of work: empty and two-word captions, German and
French captions, a few heavy users posting hundreds of times, captions about other cities, exact re-posts,
broken and missing downloads, hashtags, mentions, links and emoji, spread over a year and a half. Each
post's photo is a Flickr8k photo re-cropped, resized (at most 256 px) and re-encoded, so its bytes are its
own (a distinct SHA-256) except for the re-posts, whose bytes equal their original's. Its caption is one of
that photo's captions in the post's language (Flickr8k's five English ones; the multilingual TSV's Spanish
and Catalan translations and its human German and French ones), so the photos and words still go together.

What each post is for (its "fate") is drawn in the shares of :data:`FATE_SHARES`; a kept-looking caption is
English, Spanish or Catalan in :data:`LANGUAGE_SHARES`. Everything follows from ``--seed``: the same
arguments write the same bytes, with any number of worker processes.

Layouts: ``jsonl`` (``posts.jsonl`` with ``photos/<xx>/<shortcode>.jpg``) and ``instaloader`` (the folders
instaloader writes under its default ``{date_utc}_UTC`` pattern: ``.jpg``, ``.json.xz``, ``.txt``, one folder
per hashtag or place crawled). ``--features DIR`` also writes the features folder ``train all --features``
imports (:mod:`train.corpus.synth_features`).
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import random
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from train.corpus.instaloader import DATE_FORMAT
from train.corpus.synth_photos import BaseImages, broken_copy, render_photo, sha256_hex

log = logging.getLogger(__name__)

LAYOUTS = ("jsonl", "instaloader")
# What each post is for, as a share of the posts written; the filter that drops it in brackets. About
# half is dropped, as in the original crawl (kept 52.2 %): the kept share here is set a little above that
# because langdetect also drops some short kept-language captions (measured in docs/benchmarks.md).
FATE_SHARES: dict[str, float] = {
    "kept": 0.515,
    "missing": 0.005,  # the download failed: no photo file (ingest counts it, missing_image)
    "empty": 0.065,  # no caption, or only white space [no_caption]
    "short": 0.075,  # one or two words: "#bcn #love", "Bon dia" [short_caption]
    "foreign": 0.09,  # German or French [language]
    "heavy": 0.125,  # a heavy user's post: a few users post hundreds of times [user]
    "city": 0.055,  # about another city: "... Greetings from Paris!" [city]
    "repost": 0.04,  # the same photo bytes as an earlier kept post [duplicate]
    "broken": 0.01,  # a truncated or empty download [unreadable]
}
FATES = tuple(FATE_SHARES)
# The kept-looking captions' languages. No count of the original crawl's languages survives; these are a
# plausible guess for a Barcelona hashtag crawl (tourists' English first, then Spanish, then Catalan) and the
# shares `train multilingual` uses by default.
LANGUAGE_SHARES: dict[str, float] = {"en": 0.5, "es": 0.3, "ca": 0.2}
LANGS = ("en", "es", "ca", "de", "fr")
HEAVY_POSTS_PER_USER = 240  # "hundreds": a heavy user's posts (the user filter drops users over 20)
ORDINARY_POSTS_PER_USER = 3  # mean; drawn uniformly from a pool, so nobody reaches 20 by chance
SPAN_S = 548 * 24 * 3600  # the crawl's time span: a year and a half
START = datetime(2016, 1, 1, tzinfo=UTC)
# instaloader crawls by hashtag or place, one folder per target; a few posts sit in more than one.
TARGETS: dict[str, float] = {"#barcelona": 0.7, "#bcn": 0.2, "barcelona_location": 0.1}
DEFAULT_CITIES = ("Madrid", "Paris", "London", "Rome", "Amsterdam", "Lisbon", "Berlin", "New York",
                  "Valencia", "Sevilla", "Ibiza", "Milan", "Prague", "Tokyo")
HASHTAGS = ("barcelona", "bcn", "travel", "instatravel", "catalunya", "spain", "españa", "summer", "food",
            "love", "photooftheday", "gaudi", "sagradafamilia", "beach", "sunset", "friends", "architecture",
            "streetphotography", "instagood", "picoftheday", "wanderlust", "vacation", "europe", "tapas",
            "barceloneta", "vacaciones", "estiu", "platja", "bcnlovers", "igersbcn")
EMOJI = ("😍", "❤️", "☀️", "🌊", "🇪🇸", "✨", "🙌", "😎", "🍷", "📸", "💙", "🔥")
SHORT = ("#barcelona", "#bcn #love", "Bon dia", "nice view", "😍 #barcelona", "Barcelona ❤️", "#tbt",
         "Hola Barcelona", "summer vibes", "#travel #spain", "Que bonic", "Sin palabras", "🙌🙌", "#igersbcn",
         "Happy weekend", "Buenos días ☀️", "📸", "#sunset")
CITY_TEMPLATES = {
    "en": ("{cap} Greetings from {city}!", "Back in {city}. {cap}", "{cap} #{tag}"),
    "es": ("{cap} Saludos desde {city}.", "De vuelta en {city}. {cap}", "{cap} #{tag}"),
    "ca": ("{cap} Records des de {city}.", "Tornem a {city}. {cap}", "{cap} #{tag}"),
}
TSV_COLUMNS = {"es": "es_nllb_from_", "ca": "ca_apertium_from_es_", "de": "de_human", "fr": "fr_human"}


@dataclass(frozen=True)
class SynthConfig:
    """What ``python -m train synth`` writes."""

    posts: int
    source: Path  # a Flickr8k folder: Flickr8k.token.txt and images/
    out: Path
    multilingual: Path  # flickr8k_multi30k_es_ca.tsv: the es, ca, de and fr captions
    layout: str = "jsonl"
    seed: int = 0
    workers: int = 1
    cities: tuple[str, ...] = DEFAULT_CITIES


@dataclass(frozen=True)
class BaseCaptions:
    """Each base photo's captions by language (English always; the others where the TSV has the photo)."""

    names: tuple[str, ...]  # base photo file names, in order
    by_lang: dict[str, list[tuple[str, ...]]]  # lang -> per base photo, its captions (may be empty)

    def covered(self, lang: str) -> np.ndarray:
        """Indices of the base photos with a caption in ``lang``."""
        return np.flatnonzero([bool(c) for c in self.by_lang[lang]])


def _detokenise(text: str) -> str:
    """Flickr8k's captions have spaces around punctuation ("A dog runs ."); people's do not."""
    out = text.strip()
    for mark in (" .", " ,", " !", " ?", " '", " ;"):
        out = out.replace(mark, mark[1:])
    out = out.rstrip(" .")
    return out[:1].upper() + out[1:] + "." if out else out


def read_base_captions(source: Path, tsv: Path) -> BaseCaptions:
    """The Flickr8k photos that exist, with their captions by language."""
    from train.corpus.ingest import FLICKR_TOKENS
    from train.corpus.multilingual import read_tsv

    token_file = source / FLICKR_TOKENS
    if not token_file.is_file():
        raise FileNotFoundError(f"{token_file} not found: --from takes a Flickr8k folder")
    images = source / "images" if (source / "images").is_dir() else source
    english: dict[str, list[str]] = {}
    with token_file.open(encoding="utf-8") as f:
        for line in f:
            name, tab, text = line.rstrip("\n").partition("\t")
            if tab and "#" in name and text.strip():
                english.setdefault(name.split("#", 1)[0], []).append(_detokenise(text))
    names = tuple(sorted(n for n in english if (images / n).is_file()))
    if not names:
        raise FileNotFoundError(f"no photo of {token_file.name} found under {images}")
    by_lang: dict[str, list[tuple[str, ...]]] = {"en": [tuple(english[n]) for n in names]}
    rows = {r["image"]: r for r in read_tsv(tsv)}
    for lang, prefix in TSV_COLUMNS.items():
        caps: list[tuple[str, ...]] = []
        for n in names:
            row = rows.get(n) or {}
            caps.append(tuple(v.strip() for k, v in row.items() if k.startswith(prefix) and v and v.strip()))
        by_lang[lang] = caps
    return BaseCaptions(names, by_lang)


@dataclass
class Plan:
    """Every post of the corpus as numbers (a few bytes a post: the plan of 600,000 is about 20 MB)."""

    fate: np.ndarray  # uint8 index into FATES
    lang: np.ndarray  # uint8 index into LANGS
    base: np.ndarray  # int32 base photo
    variant: np.ndarray  # int32: the how-many-th post of that base photo (each variant's crop differs)
    origin: np.ndarray  # int64: the post whose photo bytes this one carries (itself, or a re-post's original)
    user: np.ndarray  # int32: >= 0 an ordinary user, < 0 a heavy one
    when: np.ndarray  # int64 Unix seconds, strictly increasing
    target: np.ndarray  # uint8 index into TARGETS

    def __len__(self) -> int:
        return len(self.fate)


def _counts(n: int, shares: dict[str, float]) -> list[int]:
    """Integer counts summing to ``n`` in ``shares`` (largest remainders)."""
    raw = np.array(list(shares.values()), np.float64)
    raw = raw / raw.sum() * n
    counts = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - counts))[: n - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def make_plan(n: int, captions: BaseCaptions, seed: int) -> Plan:
    """Draw every post's fate, language, base photo, user, time and folder."""
    if n < 1:
        raise ValueError("--posts must be at least 1")
    rng = np.random.default_rng([seed, 26])
    fate = np.repeat(np.arange(len(FATES), dtype=np.uint8), _counts(n, FATE_SHARES))
    rng.shuffle(fate)
    code = {f: i for i, f in enumerate(FATES)}
    lang = rng.choice(3, size=n, p=list(LANGUAGE_SHARES.values())).astype(np.uint8)
    foreign = fate == code["foreign"]
    lang[foreign] = rng.choice([3, 4], size=int(foreign.sum())).astype(np.uint8)
    n_base = len(captions.names)
    base = rng.integers(0, n_base, size=n, dtype=np.int32)
    for li, name in enumerate(LANGS[1:], 1):  # a Spanish post's photo is one the TSV translates
        covered = captions.covered(name)
        if len(covered) == 0:
            raise ValueError(f"no base photo has a {name} caption: is --multilingual the Flickr8k TSV?")
        rows = np.flatnonzero(lang == li)
        base[rows] = covered[rng.integers(0, len(covered), size=len(rows))]
    # A re-post carries an earlier ordinary kept post's photo; with none before it, it is a kept post itself.
    origin = np.arange(n, dtype=np.int64)
    kept_rows = np.flatnonzero(fate == code["kept"])
    for i in np.flatnonzero(fate == code["repost"]):
        j = int(np.searchsorted(kept_rows, i))
        if j == 0:
            fate[i] = code["kept"]
            continue
        origin[i] = kept_rows[rng.integers(0, j)]
    base, lang = base[origin], lang[origin]
    variant = _variants(base, origin)
    user = rng.integers(0, max(1, n // ORDINARY_POSTS_PER_USER), size=n).astype(np.int32)
    heavy_rows = np.flatnonzero(fate == code["heavy"])
    n_heavy_users = round(len(heavy_rows) / HEAVY_POSTS_PER_USER)
    if len(heavy_rows) > 20:
        # At least 21 posts a user, so the user filter (over 20) catches every one, even in a small corpus.
        n_heavy_users = max(1, min(n_heavy_users, len(heavy_rows) // 21))
        user[heavy_rows] = -1 - rng.integers(0, n_heavy_users, size=len(heavy_rows)).astype(np.int32)
    else:
        fate[heavy_rows] = code["kept"]  # too few to make a heavy user of
    mean_gap = max(2, SPAN_S // n)
    when = int(START.timestamp()) + np.cumsum(rng.integers(1, 2 * mean_gap, size=n, dtype=np.int64))
    target = rng.choice(len(TARGETS), size=n, p=list(TARGETS.values())).astype(np.uint8)
    return Plan(fate, lang, base, variant, origin, user, when, target)


def _variants(base: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """The how-many-th distinct photo of its base each post carries (a re-post: its original's)."""
    variant = np.zeros(len(base), np.int32)
    seen: dict[int, int] = {}
    for i, b in enumerate(base.tolist()):
        if origin[i] != i:
            variant[i] = variant[origin[i]]
            continue
        variant[i] = seen.get(b, 0)
        seen[b] = variant[i] + 1
    return variant


def shortcode(seed: int, i: int) -> str:
    """An Instagram-like 11-character shortcode, unique per post of a seed (splitmix64's finaliser is a
    bijection of 64-bit numbers, so distinct posts never share one)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    mask = (1 << 64) - 1
    x = (i + (seed << 40)) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
    return "".join(alphabet[(x >> (6 * k)) & 63] for k in range(11))


def _decorate(rng: random.Random, text: str) -> str:
    """Hashtags, emoji, a mention or a link, in the shares people add them."""
    if rng.random() < 0.15:
        text = text.lower()
    if rng.random() < 0.3:
        text += " " + "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.05:
        text += f" with @{rng.choice(('marta', 'jordi.bcn', 'the_travels', 'lauragf'))}"
    if rng.random() < 0.45:
        tags = " ".join("#" + t for t in rng.sample(HASHTAGS, rng.randint(1, 5)))
        text += ("\n.\n.\n" if rng.random() < 0.1 else " ") + tags
    if rng.random() < 0.02:
        text += " https://example.com/p/" + str(rng.randrange(10**6))
    return text


def caption_of(plan: Plan, i: int, captions: BaseCaptions, cities: Sequence[str], seed: int) -> str:
    """Post ``i``'s caption (a re-post shares its original's words, sometimes with "#repost")."""
    rng = random.Random(seed * 1_000_003 + i)
    fate = FATES[plan.fate[i]]
    if fate == "empty":
        return rng.choice(("", "", "", " ", "\n"))
    if fate == "short":
        return rng.choice(SHORT)
    if fate == "repost":
        text = caption_of(plan, int(plan.origin[i]), captions, cities, seed)
        return text + " #repost" if rng.random() < 0.5 else text
    lang = LANGS[plan.lang[i]]
    options = captions.by_lang[lang][plan.base[i]] or captions.by_lang["en"][plan.base[i]]
    text = _decorate(rng, rng.choice(options))
    if fate == "city":
        city = rng.choice(cities)
        template = rng.choice(CITY_TEMPLATES.get(lang, CITY_TEMPLATES["en"]))
        if " " in city and "#{tag}" in template:
            template = CITY_TEMPLATES["en"][0]  # "#newyork" is no city name: the filter matches words
        text = template.format(cap=text, city=city, tag=city.lower())
    return text


def user_name(plan: Plan, i: int) -> str:
    """Post ``i``'s author: heavy users have a brand's name, ordinary ones a number."""
    u = int(plan.user[i])
    return f"bcn_daily_{-u:03d}" if u < 0 else f"user{u:07d}"


@dataclass(frozen=True)
class Written:
    """What writing one post left: its posts.jsonl line (jsonl layout) and its photo's SHA-256 (None: no
    readable photo of its own — missing, broken, or a re-post's copy)."""

    line: str | None
    sha: str | None
    base: int


class Writer:
    """Writes the posts of a plan (one per worker process; the plan and captions are shared by fork)."""

    def __init__(self, cfg: SynthConfig, plan: Plan, captions: BaseCaptions) -> None:
        self.cfg = cfg
        self.plan = plan
        self.captions = captions
        self.images = BaseImages(cfg.source, captions.names)
        self.targets = tuple(TARGETS)

    def photo(self, i: int) -> bytes:
        """The photo bytes of post ``i``: its base photo's variant (a re-post: its original's bytes)."""
        o = int(self.plan.origin[i])
        return render_photo(self.images.path(int(self.plan.base[o])), int(self.plan.variant[o]),
                            self.cfg.seed * 1_000_003 + o)

    def write(self, i: int) -> Written:
        """Write post ``i``'s files; return its jsonl line (jsonl layout) and its own photo's hash."""
        plan, cfg = self.plan, self.cfg
        fate = FATES[plan.fate[i]]
        code = shortcode(cfg.seed, i)
        caption = caption_of(plan, i, self.captions, cfg.cities, cfg.seed)
        data: bytes | None = None if fate == "missing" else self.photo(i)
        sha = sha256_hex(data) if data is not None and fate not in ("broken", "repost") else None
        if fate == "broken" and data is not None:
            data = broken_copy(data, i)
        if cfg.layout == "jsonl":
            rel = f"photos/{code[:2].lower().replace('-', 'x').replace('_', 'y')}/{code}.jpg"
            if data is not None:
                _write_file(cfg.out / rel, data)
            row = {"id": code, "image": rel, "caption": caption, "user": user_name(plan, i),
                   "taken_at": datetime.fromtimestamp(int(plan.when[i]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            return Written(json.dumps(row, ensure_ascii=False), sha, int(plan.base[i]))
        folder = cfg.out / self.targets[plan.target[i]]
        stem = datetime.fromtimestamp(int(plan.when[i]), UTC).strftime(DATE_FORMAT) + "_UTC"
        if data is not None:
            _write_file(folder / f"{stem}.jpg", data)
        if caption:  # instaloader writes a caption file only for a post with a caption
            _write_file(folder / f"{stem}.txt", caption.encode("utf-8"))
        _write_file(folder / f"{stem}.json.xz", _node_file(plan, i, code, caption))
        return Written(None, sha, int(plan.base[i]))


def _write_file(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _node_file(plan: Plan, i: int, code: str, caption: str) -> bytes:
    """The ``.json.xz`` instaloader saves for a post (the GraphQL node's fields the readers use)."""
    user = int(plan.user[i])
    node = {
        "__typename": "GraphImage", "shortcode": code, "id": str(10**17 + i), "is_video": False,
        "taken_at_timestamp": int(plan.when[i]),
        "display_url": f"https://scontent.cdninstagram.com/v/{code}.jpg",
        "owner": {"id": str(10**9 + user if user >= 0 else 10**8 - user), "username": user_name(plan, i)},
        "edge_media_to_caption": {"edges": [{"node": {"text": caption}}] if caption else []},
    }
    payload = {"node": node, "instaloader": {"version": "4.10", "node_type": "Post"}}
    return lzma.compress(json.dumps(payload, separators=(",", ":")).encode("utf-8"), check=lzma.CHECK_NONE)


_WRITER: Writer | None = None


def _init_worker(writer: Writer) -> None:
    global _WRITER
    _WRITER = writer


def _write_range(bounds: tuple[int, int]) -> list[Written]:
    assert _WRITER is not None
    return [_WRITER.write(i) for i in range(*bounds)]


def _written(writer: Writer, n: int, workers: int, chunk: int = 256) -> Iterator[Written]:
    """Every post written, in order, over ``workers`` processes (forked: the plan is shared, not sent)."""
    ranges = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    if workers <= 1:
        for r in ranges:
            yield from (writer.write(i) for i in range(*r))
        return
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(writer,)) as pool:
        for batch in pool.imap(_write_range, ranges):
            yield from batch


def check_disk(out: Path, n: int) -> None:
    """Refuse before writing when the disk cannot hold the corpus (about 16 KB a post)."""
    need = n * 16_000
    probe = out if out.exists() else out.parent
    free = shutil.disk_usage(probe).free
    if free < need * 1.1:
        raise OSError(f"{n:,} posts need about {need / 1e9:.1f} GB; {probe} has {free / 1e9:.1f} GB free")


def write_synth(cfg: SynthConfig, features: Path | None = None,
                base_features: Any = None) -> dict[str, Any]:
    """Write the corpus (and, with ``features``, its features folder from ``base_features``, a
    :class:`train.corpus.synth_features.FeatureTable` of the base photos); return a summary."""
    if cfg.layout not in LAYOUTS:
        raise ValueError(f"--layout {cfg.layout!r}: use one of {', '.join(LAYOUTS)}")
    if cfg.out.exists() and any(cfg.out.iterdir()):
        raise FileExistsError(f"{cfg.out} is not empty: synth writes a new corpus into an empty folder")
    cfg.out.mkdir(parents=True, exist_ok=True)
    check_disk(cfg.out, cfg.posts)
    captions = read_base_captions(cfg.source, cfg.multilingual)
    plan = make_plan(cfg.posts, captions, cfg.seed)
    writer = Writer(cfg, plan, captions)
    sink = None
    if features is not None:
        from train.corpus.synth_features import FeatureSink

        sink = FeatureSink(features, base_features, captions.names, cfg.source)
    posts_file = cfg.out / "posts.jsonl"
    tmp = posts_file.with_name("posts.jsonl.tmp")
    lines = tmp.open("w", encoding="utf-8") if cfg.layout == "jsonl" else None
    try:
        bar = tqdm(_written(writer, cfg.posts, cfg.workers), total=cfg.posts, desc="synth", unit="posts")
        for written in bar:
            if lines is not None and written.line is not None:
                lines.write(written.line + "\n")
            if sink is not None and written.sha is not None:
                sink.add(written.sha, written.base)
    finally:
        if lines is not None:
            lines.close()
    if lines is not None:
        tmp.replace(posts_file)
    fates = {f: int((plan.fate == k).sum()) for k, f in enumerate(FATES)}
    langs = {name: int(((plan.lang == k) & np.isin(plan.fate, [0, 5, 6, 7, 8])).sum())
             for k, name in enumerate(LANGS[:3])}
    summary: dict[str, Any] = {
        "out": str(posts_file if cfg.layout == "jsonl" else cfg.out), "layout": cfg.layout,
        "posts": cfg.posts, "seed": cfg.seed, "base_photos": len(captions.names), "fates": fates,
        "languages_of_kept_looking": langs, "heavy_users": len(np.unique(plan.user[plan.user < 0])),
    }
    if sink is not None:
        summary["features"] = sink.close()
    log.info("synth: %s", summary)
    return summary


def synth_config(posts: int, source: Path, out: Path, multilingual: Path, layout: str, seed: int,
                 workers: int | None, topic: Path | None) -> SynthConfig:
    """The config from the command line (cities from ``topic``'s list when given)."""
    cities: tuple[str, ...] = DEFAULT_CITIES
    if topic is not None:
        from train.corpus.topic import load_topic

        cities = tuple(c.title() for c in load_topic(topic).cities_to_drop()) or DEFAULT_CITIES
    return SynthConfig(posts=posts, source=source, out=out, multilingual=multilingual, layout=layout,
                       seed=seed, workers=workers or os.cpu_count() or 1, cities=cities)
