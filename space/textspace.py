"""Word vectors + TF-IDF weights: caption/query embedding and nearest words, in plain numpy.

A caption (or query) vector is the TF-IDF-weighted mean of its known words' vectors, with
``tf`` the raw count in the text and ``idf = log2(n_docs / df)`` (gensim's ``TfidfModel`` defaults,
so trainer and server agree). The trainer builds this from gensim; the engine loads it from a bundle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from space.errors import UnknownWords
from space.query import Query
from space.spelling import Speller
from space.tokenize import LANGUAGES, language_stop_words

WORDS_FILE = "words.npy"
VOCAB_FILE = "vocab.json"
JOINT_WORDS_FILE = "joint_words.npy"


def unit(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    if v.ndim == 1:  # one query vector (per request in the engine): 4x cheaper than the general path
        v = np.asarray(v, dtype=np.float32)
        norm = float(np.sqrt(v @ v))
        return v / norm if norm > 0 else v.copy()
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.where(norms == 0, 1.0, norms)).astype(np.float32)


@dataclass
class TextSpace:
    """A vocabulary with one vector, one corpus count and one idf per word."""

    words: list[str]
    vectors: np.ndarray  # (V, D) float32, raw Word2Vec vectors
    idf: np.ndarray  # (V,) float32
    counts: np.ndarray  # (V,) int64 corpus frequency
    # (V, D') float32: the words' vectors in the space learned with the images
    # (``train.recipes.joint.model``), which text → image queries and hashtags use; None for a space
    # of raw Word2Vec vectors only.
    joint: np.ndarray | None = None
    # Another space's speller to use when it was built for exactly these words and counts (a server
    # swapping in a bundle trained again on the same corpus keeps its spelling index: ~100 MB and seconds
    # at 60,000 words); any other is ignored.
    share_speller: InitVar[Speller | None] = None
    index: dict[str, int] = field(init=False, repr=False)
    speller: Speller = field(init=False, repr=False)

    def __post_init__(self, share_speller: Speller | None) -> None:
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        self.idf = np.asarray(self.idf, dtype=np.float32)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        if self.joint is not None:
            self.joint = np.asarray(self.joint, dtype=np.float32)
            if len(self.joint) != len(self.words):
                raise ValueError(f"{len(self.joint)} joint word vectors for {len(self.words)} words")
        if share_speller is not None and share_speller.words == self.words \
                and np.array_equal(share_speller.counts, self.counts):
            self.speller = share_speller
        else:
            self.speller = Speller(self.words, self.counts)
        self.index = self.speller.index

    @cached_property
    def unit_vectors(self) -> np.ndarray:
        """(V, D) the word vectors scaled to unit length, made when first needed (a server ranking a large
        vocabulary through its index reads single rows instead, ``space.vectorindex.LazyRows``)."""
        return unit(self.vectors)

    def lookup(self, token: str) -> int | None:
        """The row a query token stands for: as typed, without accents, or its nearest known spelling.

        None for a word that is unknown, and for a function word of any supported language that the
        space does not know ("on", "la": queries keep them, captions never had them).
        """
        row = self.index.get(token)
        if row is not None:
            return row
        if any(token in language_stop_words(code) for code in LANGUAGES):
            return None
        return self.speller.resolve(token)[0]

    def spells(self, query: Query) -> bool:
        """Whether embedding ``query`` searches for a nearest spelling (a word neither known, accent-free
        known nor a function word, that the speller would try to correct): the costly kind of query,
        which a server answers off its event loop."""
        return any(
            t not in self.index and self.speller.exact_or_folded(t) is None
            and self.speller.correctable(t)
            and not any(t in language_stop_words(code) for code in LANGUAGES)
            for t in (*query.positive, *query.negative)
        )

    def corrections(self, query: Query) -> dict[str, str]:
        """The query's words that were matched to another spelling ("gracia" → "gràcia")."""
        out = {}
        for token in (*query.positive, *query.negative):
            if token not in self.index:
                row = self.lookup(token)
                if row is not None:
                    out[token] = self.words[row]
        return out

    def is_ignored(self, token: str) -> bool:
        """Whether ``token`` is an unknown function word (left out of a query without a word)."""
        return token not in self.index and any(token in language_stop_words(c) for c in LANGUAGES)

    @property
    def dim(self) -> int:
        """Dimension of the space."""
        return int(self.vectors.shape[1])

    def matrix(self, joint: bool = False) -> np.ndarray:
        """The word vectors queries are embedded with: the joint ones when asked for and present."""
        return self.joint if joint and self.joint is not None else self.vectors

    def embed_tokens(self, tokens: Sequence[str], joint: bool = False) -> tuple[np.ndarray | None, list[str]]:
        """TF-IDF-weighted mean of the known tokens' vectors (:meth:`matrix`), and the unknown tokens
        (in order, unique)."""
        vectors = self.matrix(joint)
        index = self.index
        counts: dict[int, int] = {}  # word id → count, in first-seen order
        unknown: list[str] = []
        for t in tokens:
            i = index.get(t)
            if i is None:
                i = self.lookup(t)
            if i is None:
                if t not in unknown and not self.is_ignored(t):
                    unknown.append(t)
            else:
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            return None, unknown
        if len(counts) == 1:  # the weighted mean of one vector is that vector
            return vectors[next(iter(counts))].copy(), unknown
        ids = np.fromiter(counts, dtype=np.int64, count=len(counts))
        weights = np.fromiter(counts.values(), dtype=np.float32, count=len(counts)) * self.idf[ids]
        total = float(weights.sum())
        if total <= 0:
            weights, total = np.ones_like(weights), float(len(weights))
        return (weights @ vectors[ids]) / np.float32(total), unknown

    def embed_query(self, query: Query, centre: np.ndarray | None = None,
                    joint: bool = False) -> tuple[np.ndarray, list[str]]:
        """A unit query vector: embed(positive) − embed(negative), each normalised first.

        With ``centre`` (a mean caption vector, ``space.centering``) each part is centred before it is
        normalised; ``joint`` embeds with the joint word vectors (:meth:`matrix`). Raises
        :class:`UnknownWords` when no term of the query is known.
        """
        pos, unknown_pos = self.embed_tokens(query.positive, joint)
        neg, unknown_neg = self.embed_tokens(query.negative, joint)
        unknown = unknown_pos + [w for w in unknown_neg if w not in unknown_pos]
        if pos is None and neg is None:
            raise UnknownWords(f"Unknown words: {', '.join(unknown)}.", unknown)
        vec = np.zeros(self.matrix(joint).shape[1], dtype=np.float32)
        if pos is not None:
            vec += unit(pos if centre is None else pos - centre)
        if neg is not None:
            vec -= unit(neg if centre is None else neg - centre)
        return unit(vec), unknown

    def query_words(self, query: Query) -> set[str]:
        """The query's known words, as the space spells them (excluded from related-word answers)."""
        rows = (self.lookup(w) for w in (*query.positive, *query.negative))
        return {self.words[r] for r in rows if r is not None}

    def nearest(self, vec: np.ndarray, k: int, exclude: set[str] | None = None) -> list[tuple[str, float]]:
        """Exact cosine nearest words to ``vec`` (the engine uses a usearch index instead)."""
        scores = self.unit_vectors @ unit(vec)
        exclude = exclude or set()
        top = np.argsort(-scores)[: k + len(exclude)]
        out = [(self.words[i], float(scores[i])) for i in top if self.words[i] not in exclude]
        return out[:k]

    def save(self, directory: Path) -> list[str]:
        """Write ``words.npy``, ``vocab.json`` (and ``joint_words.npy``) into ``directory``; return the
        file names."""
        np.save(directory / WORDS_FILE, self.vectors)
        names = [WORDS_FILE, VOCAB_FILE]
        if self.joint is not None:
            np.save(directory / JOINT_WORDS_FILE, self.joint)
            names.append(JOINT_WORDS_FILE)
        payload = {
            "words": self.words,
            "counts": [int(c) for c in self.counts],
            "idf": [round(float(x), 6) for x in self.idf],
        }
        (directory / VOCAB_FILE).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        return names

    @classmethod
    def load(cls, directory: Path, mmap: bool = False, share_speller: Speller | None = None) -> TextSpace:
        """Read a text space written by :meth:`save`; ``mmap``: its vectors memory-mapped, not read (every
        process on a host then shares one copy, and a query reads only its words' rows); ``share_speller``:
        see the field."""
        payload = json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8"))
        vectors = np.load(directory / WORDS_FILE, mmap_mode="r" if mmap else None)
        joint_file = directory / JOINT_WORDS_FILE
        joint = np.load(joint_file, mmap_mode="r" if mmap else None) if joint_file.is_file() else None
        return cls(payload["words"], vectors, np.array(payload["idf"]), np.array(payload["counts"]), joint,
                   share_speller)
