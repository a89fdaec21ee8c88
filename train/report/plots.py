"""Matplotlib figures of the report (Agg backend, no display): bars, per-language panels, word map."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # the trainer runs headless; select before pyplot is imported

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

DPI = 100


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _empty_note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def word_bars(counts: Sequence[tuple[str, int]], title: str, path: Path) -> None:
    """Horizontal bar chart of (word, count), most frequent on top."""
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(counts) + 1)))
    if counts:
        labels = [w for w, _ in counts][::-1]
        values = [c for _, c in counts][::-1]
        ax.barh(labels, values, color="#3b75af")
        ax.set_xlabel("occurrences")
        ax.tick_params(axis="y", labelsize=9)
    else:
        _empty_note(ax, "no words")
    ax.set_title(title)
    _save(fig, path)


def words_by_language(per_language: dict[str, list[tuple[str, int]]], path: Path) -> None:
    """One horizontal histogram of top words per language, side by side."""
    codes = list(per_language) or ["unknown"]
    cols = min(3, len(codes))
    rows = math.ceil(len(codes) / cols)
    n = max((len(v) for v in per_language.values()), default=1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, max(3.0, 0.26 * n + 1) * rows), squeeze=False)
    for ax, code in zip(axes.ravel(), codes, strict=False):
        counts = per_language.get(code, [])
        if counts:
            ax.barh([w for w, _ in counts][::-1], [c for _, c in counts][::-1], color="#d9822b")
            ax.tick_params(axis="y", labelsize=8)
        else:
            _empty_note(ax, "no words")
        ax.set_title(f"top words: {code}")
    for ax in axes.ravel()[len(codes):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def language_bars(shares: dict[str, dict[str, float]], path: Path, note: str | None = None) -> None:
    """Bar chart of kept posts per language, labelled with the share."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(shares) + 2), 4))
    codes = list(shares)
    counts = [shares[c]["posts"] for c in codes]
    bars = ax.bar(codes, counts, color="#4c9a52")
    for bar, code in zip(bars, codes, strict=True):
        ax.annotate(f"{shares[code]['share']:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("kept posts")
    ax.set_title("posts per language" + (f"\n{note}" if note else ""))
    _save(fig, path)


def attraction_bars(
    ranked: list[dict[str, Any]], path: Path, spearman: float | None, has_reference: bool
) -> None:
    """Mentions per attraction, most mentioned on top, with the reference rank beside each name."""
    total = sum(e["mentions"] for e in ranked)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.3 * len(ranked) + 1) if total else 3.0))
    if total == 0:
        _empty_note(ax, f"no mentions of any of the {len(ranked)} configured attractions" if ranked
                    else "no attractions configured (a topic file lists them: --topic)")
    else:
        shown = ranked[::-1]
        labels = [
            e["name"] + (f"  (ref #{e['reference_rank']})" if e.get("reference_rank") else "")
            if has_reference else e["name"]
            for e in shown
        ]
        ax.barh(labels, [e["mentions"] for e in shown], color="#8e5ea2")
        ax.set_xlabel("mentions")
    title = "attraction mentions"
    if has_reference:
        title += f" — Spearman vs reference: {spearman:.2f}" if spearman is not None else " — Spearman: n/a"
    ax.set_title(title)
    _save(fig, path)


def word_map(words: Sequence[str], points: np.ndarray, counts: Sequence[int], path: Path) -> None:
    """Labelled scatter plot of words at their 2-D t-SNE positions (marker size ~ log frequency)."""
    fig, ax = plt.subplots(figsize=(14, 14))
    if len(words):
        sizes = 4 + 6 * np.log1p(np.asarray(counts, dtype=float))
        ax.scatter(points[:, 0], points[:, 1], s=sizes, alpha=0.4, color="#3b75af")
        for word, (x, y) in zip(words, points, strict=True):
            ax.annotate(word, (x, y), fontsize=7, ha="center", va="bottom")
    else:
        _empty_note(ax, "no words")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"word map: t-SNE of the {len(words)} most frequent words")
    _save(fig, path)
