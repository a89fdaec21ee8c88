"""The bot's catalogs (bot/locale/{en,es,ca}.po): complete, consistent, with plural forms and numbers in
each language's way.

Issue 25, item 5: the bot said "1 mentions in 1 posts", wrote 8089 the same in every language, and built
the /retrain progress in English only (space/jobs.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from bot.admin import status_text
from bot.corpus_answers import attractions_text, language_shares
from bot.engine_answers import Attraction, Stats
from bot.menus import ADMIN_COMMANDS, COMMANDS
from bot.messages import CA, EN, ES, LANGUAGES, catalog_path, number, plural, text
from space.jobs import RetrainStatus
from tests.conftest import ROOT

FIELD = re.compile(r"{(\w+)")


def _stats(**changes: object) -> Stats:
    base: dict[str, object] = {
        "version": "v", "n_images": 8091, "n_words": 5000, "kept": 8089, "total": 8091, "dropped": None,
        "languages": {}, "top_words": [], "top_words_by_language": {}, "image_search": None,
        "report_files": []}
    return Stats(**{**base, **changes})  # type: ignore[arg-type]


def _catalog(lang: str) -> dict[str, tuple[str, ...]]:
    with catalog_path(lang).open("rb") as f:
        catalog = read_po(f, locale=lang)
    assert catalog.num_plurals == 2 and catalog.plural_expr == "(n != 1)"
    entries = {}
    for message in catalog:
        if not message.id:
            continue
        key = message.id[0] if isinstance(message.id, tuple) else message.id
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        entries[key] = tuple(forms)
    return entries


def test_the_three_catalogs_have_the_same_keys_forms_and_fields() -> None:
    catalogs = {lang: _catalog(lang) for lang in LANGUAGES}
    english = catalogs[EN]
    assert len(english) > 140
    for lang, entries in catalogs.items():
        assert set(entries) == set(english), (lang, set(entries) ^ set(english))
        for key, forms in entries.items():
            assert all(forms), f"{lang}: {key} has an empty form"
            assert len(forms) == len(english[key]), f"{lang}: {key} plural forms differ from en.po"
            fields = {f for form in forms for f in FIELD.findall(form)}
            expected = {f for form in english[key] for f in FIELD.findall(form)}
            assert fields == expected, f"{lang}: {key} has fields {fields}, en.po {expected}"


def _keys_in_code() -> set[str]:
    """Every literal message key the bot's code asks for (t/tn, text/plural)."""
    pattern = re.compile(r"""(?:\.t|\.tn|\btext|\bplural)\((?:lang, |EN, |self\.lang, )?"([a-z_]+)\"""")
    keys = set()
    for path in (ROOT / "bot").glob("*.py"):
        keys |= set(pattern.findall(path.read_text()))
    return keys


def test_every_key_the_code_asks_for_is_in_the_catalogs() -> None:
    keys = _keys_in_code()
    assert {"busy", "images_for", "attraction_line", "about", "retrain_stage"} <= keys  # the scan works
    keys |= {f"cmd_{name}" for name in (*COMMANDS, *ADMIN_COMMANDS)}
    missing = sorted(keys - set(_catalog(EN)))
    assert missing == []


@pytest.mark.parametrize(("lang", "one", "many"), [
    (EN, "1. Sagrada Família — 1 mention in 1 post", "2. Park Güell — 1,204 mentions in 1,198 posts"),
    (ES, "1. Sagrada Família: 1 mención en 1 publicación",
     "2. Park Güell: 1.204 menciones en 1.198 publicaciones"),
    (CA, "1. Sagrada Família: 1 menció en 1 publicació",
     "2. Park Güell: 1.204 mencions en 1.198 publicacions"),
])
def test_attractions_in_plural_forms_and_local_numbers(lang: str, one: str, many: str) -> None:
    stats = _stats(attractions=[Attraction("Sagrada Família", 1, 1, 1),
                                Attraction("Park Güell", 1204, 1198, 2)])
    lines = attractions_text(stats, lang).splitlines()
    assert lines[1:] == [one, many]


def test_attractions_without_a_topic_say_how_to_name_the_places() -> None:
    for lang in LANGUAGES:
        reply = attractions_text(_stats(attractions=[]), lang)
        assert "[[attractions]]" in reply and "--topic" in reply and "TRAIN_TOPIC" in reply
        assert " 0 " not in reply
    assert attractions_text(_stats(attractions=[Attraction("Tibidabo", 0, 0, None)]), EN) == (
        "No post mentions the one place the report looks for.")


def test_numbers_and_percentages_as_each_language_writes_them() -> None:
    assert text(EN, "posts_kept", kept=8089, total=8091) == "Posts kept: 8,089 of 8,091"
    assert text(ES, "posts_kept", kept=8089, total=8091) == "Publicaciones conservadas: 8.089 de 8.091"
    assert text(CA, "posts_kept", kept=8089, total=8091) == "Publicacions conservades: 8.089 de 8.091"
    assert [number(lang, 0.7634, 2) for lang in LANGUAGES] == ["0.76", "0,76", "0,76"]
    stats = _stats(languages={"en": 53, "es": 27, "ca": 20})
    assert language_shares(stats, EN) == "en 53% · es 27% · ca 20%"
    # CLDR writes a no-break space before the sign.
    assert language_shares(stats, CA) == "en 53\u00a0% · es 27\u00a0% · ca 20\u00a0%"
    assert plural(EN, "about", 1, languages="en") == "I know 1 post (languages: en)."
    assert plural(ES, "about", 8089, languages="es") == "Conozco 8.089 publicaciones (idiomas: es)."


def test_retrain_progress_and_status_in_each_language() -> None:
    running = RetrainStatus("running", "encode", done=1500, total=8091, unit="images", rate=41.5, elapsed=75,
                            eta=160)
    assert status_text(running, EN) == (
        "Retraining — stage: encoding the images · 1,500/8,091 images (19%) · 41.5 images/s · elapsed 1m15s"
        " · ETA 2m40s")
    assert status_text(running, ES) == (
        "Reentrenamiento — etapa: codificación de las fotos · 1.500/8.091 fotos (19\u00a0%) · 41,5 fotos/s · "
        "transcurrido 1m15s · quedan 2m40s")
    assert status_text(running, CA).startswith(
        "Reentrenament — etapa: codificació de les fotos · 1.500/8.091")
    one = RetrainStatus("running", "joint", done=1, total=1, unit="epochs")
    assert "1/1 epoch (100%)" in status_text(one, EN) and "1/1 època (100\u00a0%)" in status_text(one, CA)
    unknown = RetrainStatus("running", "new-stage", done=2, total=4, unit="widgets")
    assert "stage: new-stage · 2/4 widgets (50%)" in status_text(unknown, EN)  # as the trainer named them
    assert status_text(RetrainStatus("done", version="v7"), ES) == "Reentrenamiento terminado: versión v7."
    failed = RetrainStatus("failed", error="disk full")
    assert status_text(failed, CA) == "El reentrenament ha fallat: disk full."
    assert status_text(RetrainStatus("idle"), EN) == "No retraining is running."


def test_a_language_the_bot_lacks_gets_english() -> None:
    assert text("de", "busy") == text(EN, "busy") and plural("fr", "n_posts", 3) == "3 posts"
    assert Path(catalog_path(EN)).parent == ROOT / "bot" / "locale"


def test_adding_a_message_is_one_command(tmp_path: Path) -> None:
    """scripts/add_message.py appends a message to the three catalogs, and the bot reads it."""
    import shutil
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import add_message
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    locale = tmp_path / "locale"
    shutil.copytree(ROOT / "bot" / "locale", locale)
    assert add_message.main(["--locale", str(locale), "new_one", "New {q}", "Nuevo {q}", "Nou {q}"]) == 0
    assert add_message.main(["--locale", str(locale), "--plural", "n_photos", "{n} photo|{n} photos",
                             "{n} foto|{n} fotos", "{n} foto|{n} fotos"]) == 0
    assert add_message.main(["--locale", str(locale), "new_one", "a", "b", "c"]) == 2  # already there
    assert add_message.main(["--locale", str(locale), "odd", "{a}", "{b}", "{a}"]) == 2  # fields differ
    with (locale / "ca.po").open("rb") as f:
        catalog = read_po(f, locale="ca")
    assert catalog.get("new_one").string == "Nou {q}"
    assert catalog.get(("n_photos", "n_photos")).string == ("{n} foto", "{n} fotos")
