"""Which languages a hashtag candidate belongs to: where people write it, not where it strays once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from space.textspace import TextSpace
from train.corpus.posts import Post
from train.recipes.joint.hashtags import word_languages

WORDS = ["water", "home", "dos", "gos", "dog", "perro", "aigua", "agua"]


def _post(i: int, lang: str, caption: str) -> Post:
    return Post(id=str(i), image=Path(f"{i}.jpg"), caption=caption, lang=lang, split="train")


def test_a_word_belongs_where_it_is_written_not_where_it_strays() -> None:
    captions = (
        [("en", "dog in the water near home")] * 2 + [("en", "dog in the water")] * 18
        + [("ca", "dos gos a l'aigua a home")] * 19 + [("ca", "un gos i water")]
        + [("es", "dos perro en el agua")] * 20
    )
    posts = [_post(i, lang, text) for i, (lang, text) in enumerate(captions)]
    rng = np.random.default_rng(0)
    space = TextSpace(WORDS, rng.normal(size=(len(WORDS), 4)).astype(np.float32), np.ones(len(WORDS)),
                      np.ones(len(WORDS), np.int64))
    column = {space.index[w]: h for h, w in enumerate(WORDS)}
    languages = ["ca", "en", "es"]
    table = word_languages(posts, np.arange(len(posts)), space, column, languages)

    def langs(word: str) -> set[str]:
        return {languages[li] for li in np.flatnonzero(table[:, WORDS.index(word)])}

    assert langs("water") == {"en"}  # 18 of 20 English captions, 1 of 20 Catalan ones
    assert langs("home") == {"ca"}  # Catalan for "man": 19 of 20 Catalan captions, 2 of 20 English ones
    assert langs("dos") == {"ca", "es"}  # both languages write it as often
    assert langs("gos") == {"ca"} and langs("perro") == {"es"} and langs("dog") == {"en"}
