"""Hashtags for a photo: the words people would write under it, scored from the photo's vector.

Two votes, added: a word head (one logistic regression per candidate word on the image's vector, trained
on the corpus' training posts: the probability that the word is in the post's captions) and the caption
words of the photo's nearest training posts, weighted by similarity. Candidates are the corpus' frequent
content words, so answers are common, visual words ("dog grass running") rather than the rare words that
happen to lie nearest to the raw vector. A word whose singular or plural is already chosen is skipped.

On Flickr8k's 1K test photos (frozen-feature joint space) P@5 is 57 with the head alone, 55 with the
neighbours alone and 58.5 with both (``scripts/bench_answers.py``).

The neighbours are found among the voting posts only, through ``hashtags.usearch`` (their unit image
vectors, key = the post's position in ``pool``) above ``space.vectorindex.EXACT_ROWS`` posts, so a photo
costs the same at 260,000 training posts as at 6,000; the vote reads the CSR rows of the neighbours'
positions directly (:meth:`Hashtagger.scores_at`), nothing is built per request.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

HASHTAGS_FILE = "hashtags.npz"
POOL_INDEX = "hashtags.usearch"  # the voting posts' unit image vectors, key = position in the pool
NEIGHBOURS = 40  # training posts whose captions vote
NEIGHBOUR_WEIGHT = 1.0  # their vote against the head's probability


def plural_forms(word: str) -> set[str]:
    """The word with a trailing s/es added or removed (the forms one hashtag stands for)."""
    forms = {word, word + "s", word + "es"}
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s"):
        forms.add(word[:-1])
    return forms


@dataclass(frozen=True)
class Hashtagger:
    """The word head and the neighbour votes of one bundle."""

    rows: np.ndarray  # (H,) vocabulary rows of the candidate words
    weight: np.ndarray  # (H, D) the head, on raw image vectors
    bias: np.ndarray  # (H,)
    pool: np.ndarray  # (P,) image rows whose captions vote (the training posts)
    indptr: np.ndarray  # (P + 1,) CSR: candidates in the captions of pool post p are
    indices: np.ndarray  # indices[indptr[p]:indptr[p + 1]]
    languages: tuple[str, ...] = ()
    in_language: np.ndarray | None = None  # (L, H) bool: the candidate occurs in captions of language l

    def save(self, directory: Path) -> str:
        """Write ``hashtags.npz`` into ``directory``; return its name."""
        np.savez(directory / HASHTAGS_FILE, rows=self.rows, weight=self.weight, bias=self.bias,
                 pool=self.pool, indptr=self.indptr, indices=self.indices,
                 languages=np.array(self.languages, dtype=str),
                 in_language=(self.in_language if self.in_language is not None
                              else np.zeros((0, len(self.rows)), bool)))
        return HASHTAGS_FILE

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> Hashtagger | None:
        """The bundle's hashtagger, or None for a bundle without one (nearest words instead).

        ``mmap``: the voting posts' arrays (``pool``, ``indptr``, ``indices``: ~40 MB at 260,000 posts) are
        memory-mapped from the file (``np.savez`` stores them uncompressed), so processes share them.
        """
        path = Path(directory) / HASHTAGS_FILE
        if not path.is_file():
            return None
        mapped = map_npz(path, ("pool", "indptr", "indices")) if mmap else {}
        with np.load(path) as d:
            langs = tuple(str(x) for x in d["languages"])
            table = d["in_language"]
            if table.shape[0] != len(langs):  # a one-language corpus keeps no table: every word is allowed
                langs, table = (), None
            pool, indptr, indices = (mapped[name] if name in mapped else d[name]
                                     for name in ("pool", "indptr", "indices"))
            return cls(d["rows"], d["weight"].astype(np.float32), d["bias"].astype(np.float32), pool,
                       indptr, indices, langs, table)

    def pool_mask(self, n_images: int) -> np.ndarray:
        """(n_images,) bool: which image rows vote."""
        mask = np.zeros(n_images, bool)
        mask[self.pool[self.pool < n_images]] = True
        return mask

    @cached_property
    def _position(self) -> np.ndarray:
        """(max row + 1,) the pool position of each image row, -1 for rows that do not vote (built once)."""
        size = int(self.pool.max()) + 1 if len(self.pool) else 0
        position = np.full(size, -1, dtype=np.int64)
        position[self.pool] = np.arange(len(self.pool))
        return position

    def positions(self, image_rows: np.ndarray) -> np.ndarray:
        """The pool position of each image row (-1: not a voting post)."""
        rows = np.asarray(image_rows, dtype=np.int64)
        inside = (rows >= 0) & (rows < len(self._position))
        return np.where(inside, self._position[np.where(inside, rows, 0)], -1)

    def scores(self, vec: np.ndarray, neighbours: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """(H,) score in [0, 1] of each candidate for an image vector ``vec`` whose nearest pool rows
        (image rows, best first) are ``neighbours`` with cosine ``sims``: the head's probability and the
        share of the neighbours' similarity that voted for the word, averaged with their weights."""
        return self.scores_at(vec, self.positions(np.asarray(neighbours)[:NEIGHBOURS]), sims)

    def scores_at(self, vec: np.ndarray, positions: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """:meth:`scores` with the neighbours given by their positions in ``pool`` (-1: none)."""
        z = self.weight @ np.asarray(vec, np.float32) + self.bias
        out = 1.0 / (1.0 + np.exp(-z))
        votes = np.zeros(len(self.rows), np.float32)
        total = 0.0
        for p, sim in zip(np.asarray(positions)[:NEIGHBOURS].tolist(), np.asarray(sims)[:NEIGHBOURS].tolist(),
                          strict=False):
            if p < 0 or p >= len(self.pool) or sim <= 0:
                continue
            votes[self.indices[self.indptr[p] : self.indptr[p + 1]]] += sim
            total += sim
        if total > 0:
            out = out + NEIGHBOUR_WEIGHT * votes / total
        return (out / (1.0 + NEIGHBOUR_WEIGHT)).astype(np.float32)  # in [0, 1], like the other scores

    def best(self, scores: np.ndarray, words: Sequence[str], k: int,
             language: str | None = None) -> list[tuple[str, float]]:
        """The ``k`` best candidates as (word, score), one per singular/plural pair, optionally only
        words of ``language``'s captions."""
        order = np.argsort(-scores, kind="stable")
        if language is not None and self.in_language is not None and language in self.languages:
            allowed = self.in_language[self.languages.index(language)]
            order = order[allowed[order]]
        out: list[tuple[str, float]] = []
        taken: set[str] = set()
        for h in order.tolist():
            word = words[int(self.rows[h])]
            if word in taken:
                continue
            out.append((word, float(scores[h])))
            taken |= plural_forms(word)
            if len(out) >= k:
                break
        return out


def map_npz(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` file memory-mapped in place, where stored uncompressed (the
    others, and those of a compressed file, are left out: the caller reads them with ``np.load``)."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, path.open("rb") as f:
        for name in names:
            try:
                info = archive.getinfo(name + ".npy")
            except KeyError:
                continue
            if info.compress_type != zipfile.ZIP_STORED:
                continue
            f.seek(info.header_offset)
            header = f.read(30)  # the local file header: its name and extra field lengths are at 26 and 28
            if header[:4] != b"PK\x03\x04":
                continue
            f.seek(info.header_offset + 30 + int.from_bytes(header[26:28], "little")
                   + int.from_bytes(header[28:30], "little"))
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read(f)
            if dtype.hasobject or fortran:
                continue
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape)
    return out
