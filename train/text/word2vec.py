"""The text space: Word2Vec on the kept captions, gensim Dictionary + TF-IDF, caption vectors.

The exported :class:`space.textspace.TextSpace` holds each Word2Vec word's raw vector, corpus count and
idf (gensim's ``log2(N / df)`` over the per-post token lists); a caption's target vector is its
TF-IDF-weighted mean (``TextSpace.embed_tokens``), the very function the engine embeds queries with.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from space.errors import UnknownWords
from space.query import parse_query
from space.textspace import TextSpace
from space.tokenize import tokenize
from train.config import TextConfig
from train.corpus.posts import Post
from train.progress import ProgressCallback

log = logging.getLogger(__name__)

VECTORS_FILE = "caption_vectors.npy"
IDS_FILE = "caption_ids.json"


@dataclass
class TextResult:
    """The text space, one target vector per post that kept a known word, and what was dropped."""

    space: TextSpace
    posts: list[Post]
    vectors: np.ndarray  # (len(posts), D) float32
    dropped_ids: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        """Write the space, the caption vectors and the kept ids into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        self.space.save(directory)
        np.save(directory / VECTORS_FILE, self.vectors)
        payload = {"ids": [p.id for p in self.posts], "dropped": self.dropped_ids, "stats": self.stats}
        (directory / IDS_FILE).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, posts: Sequence[Post]) -> TextResult:
        """Read a result written by :meth:`save`, re-attaching the given posts by id."""
        payload = json.loads((directory / IDS_FILE).read_text(encoding="utf-8"))
        by_id = {p.id: p for p in posts}
        kept = [by_id[i] for i in payload["ids"]]
        vectors = np.load(directory / VECTORS_FILE)
        return cls(TextSpace.load(directory), kept, vectors, payload["dropped"], payload["stats"])


def post_tokens(post: Post) -> list[str]:
    """The content tokens a post is embedded by (its ``caption``, without its language's function words)."""
    return tokenize(post.caption, language=post.lang)


def sentences_of(posts: Sequence[Post], cfg: TextConfig) -> list[list[str]]:
    """Word2Vec's training sentences: each reference caption on its own (Flickr8k: five), else the caption."""
    out: list[list[str]] = []
    for p in posts:
        texts = p.captions if cfg.sentences_from_captions and p.captions else (p.caption,)
        out.extend(toks for t in texts if (toks := tokenize(t, language=p.language_of(t))))
    return out


def train_word2vec(
    sentences: list[list[str]], cfg: TextConfig, progress: ProgressCallback | None = None
) -> Any:
    """gensim Word2Vec with ``cfg``'s settings; reports one progress step per epoch."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class _Epochs(CallbackAny2Vec):
        """Forward epoch ends to the progress reporter."""

        def __init__(self) -> None:
            self.epoch = 0

        def on_epoch_end(self, model: Any) -> None:
            self.epoch += 1
            if progress is not None:
                progress("text:word2vec", self.epoch, cfg.epochs, "epochs")

    return Word2Vec(
        sentences,
        vector_size=cfg.vector_size,
        window=cfg.window,
        min_count=cfg.min_count,
        epochs=cfg.epochs,
        sg=cfg.sg,
        negative=cfg.negative,
        workers=max(1, cfg.workers),
        seed=cfg.seed,
        hashfxn=stable_hash,
        max_final_vocab=cfg.max_vocab,
        callbacks=[_Epochs()],
    )


def stable_hash(text: str) -> int:
    """gensim's seed for a word's starting vector: the same in every process (Python's ``hash`` of a
    string is salted per process unless PYTHONHASHSEED is set)."""
    return zlib.crc32(text.encode("utf-8"))


def build_text_space(
    posts: Sequence[Post], cfg: TextConfig, progress: ProgressCallback | None = None
) -> TextResult:
    """Word2Vec + Dictionary/TF-IDF over ``posts``; caption vectors for those with a known word."""
    from gensim.corpora import Dictionary
    from gensim.models import TfidfModel

    t0 = time.monotonic()
    sentences = sentences_of(posts, cfg)
    if not sentences:
        raise ValueError("No caption has a content word left after tokenising: nothing to train on.")
    n_tokens = sum(len(s) for s in sentences)
    log.info("word2vec on %d sentences (%d tokens), %s", len(sentences), n_tokens, cfg)
    w2v = train_word2vec(sentences, cfg, progress)
    t_w2v = time.monotonic() - t0
    words = list(w2v.wv.index_to_key)
    if not words:
        raise ValueError(f"No word occurs {cfg.min_count} times or more: the corpus is too small.")

    docs = [post_tokens(p) for p in posts]
    dictionary = Dictionary(docs)
    tfidf = TfidfModel(dictionary=dictionary)  # idf = log2(N / df), gensim's default
    idf = np.array(
        [tfidf.idfs.get(dictionary.token2id[w], 0.0) if w in dictionary.token2id else 0.0 for w in words],
        dtype=np.float32,
    )
    counts = np.array([w2v.wv.get_vecattr(w, "count") for w in words], dtype=np.int64)
    space = TextSpace(words, w2v.wv.vectors.copy(), idf, counts)

    kept: list[Post] = []
    vecs: list[np.ndarray] = []
    dropped: list[str] = []
    for post, doc in zip(posts, docs, strict=True):
        vec, _ = space.embed_tokens(doc)
        if vec is None:
            dropped.append(post.id)
        else:
            kept.append(post)
            vecs.append(vec)
    vectors = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, space.dim), np.float32)
    stats = {
        "n_sentences": len(sentences),
        "n_tokens": n_tokens,
        "vocab": len(words),
        "dictionary": len(dictionary),
        "no_known_words": len(dropped),
        "word2vec_seconds": round(t_w2v, 2),
        "seconds": round(time.monotonic() - t0, 2),
    }
    log.info(
        "text space: %d words (dim %d); %d posts embedded, %d with no known word; %.1fs",
        len(words),
        space.dim,
        len(kept),
        len(dropped),
        stats["seconds"],
    )
    return TextResult(space, kept, vectors, dropped, stats)


def related(space: TextSpace, text: str, k: int = 10) -> tuple[list[tuple[str, float]], list[str]]:
    """Words nearest a query (``food barcelona``, ``beer -estrella``) and its unknown words.

    A query of unknown words only answers no words and lists them, rather than raising.
    """
    query = parse_query(text)
    try:
        vec, unknown = space.embed_query(query)
    except UnknownWords as exc:
        return [], exc.unknown
    return space.nearest(vec, k, exclude=space.query_words(query)), unknown
