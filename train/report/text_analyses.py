"""Corpus text analyses: top words (overall and per language), language shares, attraction mentions.

Pure functions over kept posts; no plotting here (see :mod:`train.report.plots`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from space.tokenize import tokenize, words
from train.corpus.posts import Post
from train.corpus.topic import Attraction

UNKNOWN_LANGUAGE = "unknown"


def post_texts(post: Post) -> tuple[str, ...]:
    """The texts a post contributes to the analyses: its own caption, what its author wrote.

    Not its other reference captions: a multilingual corpus keeps the image's translations there for the
    trainer to learn from, and counting them would put Spanish and English words at the top of the
    Catalan posts' list (the original counted each post's own caption under its own language).
    """
    return (post.caption,)


def count_words(posts: Iterable[Post]) -> Counter[str]:
    """Content-word frequencies (``space.tokenize.tokenize``, in each post's language) of the posts' own
    captions."""
    counts: Counter[str] = Counter()
    for post in posts:
        for text in post_texts(post):
            counts.update(tokenize(text, language=post.lang))
    return counts


def ranked(counts: Counter[str], n: int) -> list[tuple[str, int]]:
    """The ``n`` most frequent words, ties broken alphabetically so runs are reproducible."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def top_words(posts: Sequence[Post], n: int) -> list[tuple[str, int]]:
    """The ``n`` most frequent content words of the posts' own captions."""
    return ranked(count_words(posts), n)


def language_of(post: Post) -> str:
    """The post's language code, or ``"unknown"``."""
    return post.lang or UNKNOWN_LANGUAGE


def language_shares(posts: Sequence[Post]) -> dict[str, dict[str, float]]:
    """Kept posts per language: ``{code: {"posts": n, "share": n / total}}``, largest first."""
    counts = Counter(language_of(p) for p in posts)
    total = max(1, len(posts))
    return {
        code: {"posts": n, "share": round(n / total, 6)}
        for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    }


def top_words_by_language(posts: Sequence[Post], n: int) -> dict[str, list[tuple[str, int]]]:
    """Top content words within each language present, largest language first."""
    groups: dict[str, list[Post]] = {}
    for post in posts:
        groups.setdefault(language_of(post), []).append(post)
    order = sorted(groups, key=lambda code: (-len(groups[code]), code))
    return {code: top_words(groups[code], n) for code in order}


def _alias_tokens(attractions: Sequence[Attraction]) -> list[list[tuple[str, ...]]]:
    return [[tuple(words(alias)) for alias in a.aliases if words(alias)] for a in attractions]


def _count_spans(tokens: list[str], aliases: list[tuple[str, ...]]) -> int:
    """Non-overlapping whole-token matches of any alias (longest alias wins where they overlap)."""
    taken = [False] * len(tokens)
    hits = 0
    for alias in sorted(set(aliases), key=len, reverse=True):
        k = len(alias)
        for i in range(len(tokens) - k + 1):
            if tuple(tokens[i : i + k]) == alias and not any(taken[i : i + k]):
                taken[i : i + k] = [True] * k
                hits += 1
    return hits


def count_attractions(posts: Sequence[Post], attractions: Sequence[Attraction]) -> list[dict[str, Any]]:
    """Mentions of each attraction (token-sequence matches on ``space.tokenize.words``), ranked.

    Matching is on whole tokens ("born" matches "the born identity", never "unborn") and stop words are
    kept, so "la rambla" can match. Each entry: name, mentions, posts (posts mentioning it), rank (1 =
    most mentioned; attractions with no mention have rank None).
    """
    alias_tokens = _alias_tokens(attractions)
    mentions = [0] * len(attractions)
    posts_with = [0] * len(attractions)
    for post in posts:
        tokenised = [words(t) for t in post_texts(post)]  # stop words kept: "la rambla"
        for j, aliases in enumerate(alias_tokens):
            hits = sum(_count_spans(toks, aliases) for toks in tokenised)
            mentions[j] += hits
            posts_with[j] += hits > 0
    order = sorted(range(len(attractions)), key=lambda j: (-mentions[j], attractions[j].name))
    ranked: list[dict[str, Any]] = []
    for position, j in enumerate(order, start=1):
        ranked.append(
            {
                "name": attractions[j].name,
                "mentions": mentions[j],
                "posts": posts_with[j],
                "rank": position if mentions[j] > 0 else None,
            }
        )
    return ranked


def compare_with_reference(ranked: list[dict[str, Any]], reference: Sequence[str]) -> dict[str, Any]:
    """Add each attraction's reference rank and the Spearman correlation of our ranking with it.

    Ranks are compared over the attractions present in both lists (ours: by mentions, ties averaged).
    The correlation is None when fewer than 3 are shared or when either ranking is constant (e.g. no
    mentions at all), since it is undefined there.
    """
    from scipy.stats import rankdata, spearmanr

    ref_rank = {name.lower(): i for i, name in enumerate(reference, start=1)}
    for entry in ranked:
        entry["reference_rank"] = ref_rank.get(entry["name"].lower())
    shared = [e for e in ranked if e["reference_rank"] is not None]
    ours = rankdata([-e["mentions"] for e in shared]) if shared else []
    theirs = [e["reference_rank"] for e in shared]
    rho: float | None = None
    if len(shared) >= 3 and len(set(ours)) > 1 and len(set(theirs)) > 1:
        rho = round(float(spearmanr(ours, theirs).statistic), 6)
    return {"spearman": rho, "shared": len(shared), "reference": list(reference)}
