"""The bot for the people of the topic: their language, examples that answer, their stats, a language
filter, credits — the real PTB client, the local Bot API, the real engine on the small real bundle."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest

from bot.app import build_application, running
from bot.engine_answers import ImageAnswer, ImageHit, RelatedAnswer, ScoredWord, parse_images, parse_stats
from bot.examples import choose_examples
from bot.local_api import BOT_USERNAME, ApiCall, LocalBotApi
from bot.menus import ADMIN_COMMANDS, COMMANDS
from bot.messages import CA, EN, ES, LANGUAGE_NAMES, LANGUAGES, language, percent, plural, text
from bot.sending import hit_caption
from space.version import __version__
from tests.bot.conftest import ADMIN_ID, bot_settings, engine_json

USERS = {EN: 2001, ES: 2002, CA: 2003}  # one user per language, each their own private chat


@pytest.fixture
async def people(api: LocalBotApi, engine_url: str) -> AsyncIterator[LocalBotApi]:
    """A running bot whose users 2001, 2002, 2003 have set Telegram to English, Spanish, Catalan."""
    for lang, user in USERS.items():
        api.user_languages[user] = {EN: "en", ES: "es", CA: "ca-ES"}[lang]
    api.user_languages[ADMIN_ID] = "es"
    async with running(build_application(bot_settings(api, engine_url))):
        yield api


def from_chat(chat: int, starts: str | None = None) -> Callable[[ApiCall], bool]:
    """A predicate: a message to ``chat`` (starting with ``starts``)."""
    def match(call: ApiCall) -> bool:
        return call.params.get("chat_id") == str(chat) and (starts is None or call.text.startswith(starts))
    return match


async def ask(api: LocalBotApi, line: str, user: int, method: str = "sendMessage",
              starts: str | None = None) -> ApiCall:
    """Send ``line`` as ``user`` and wait for the bot's ``method`` call to their chat."""
    n = len(api.calls)
    await api.push(api.text_update(line, user_id=user))
    return await api.wait_for(method, from_chat(user, starts), after=n)


def test_telegram_language_codes() -> None:
    codes = ("es", "ca-ES", "CA", "en-GB", "de", None, "")
    assert [language(c) for c in codes] == [ES, CA, CA, EN, EN, EN, EN]


async def test_greeting_and_help_in_the_users_language(people: LocalBotApi, engine_url: str) -> None:
    kept = (await engine_json(engine_url, "/v1/stats"))["filter_report"]["kept"]
    for lang, user in USERS.items():
        reply = await ask(people, "/start", user)
        assert reply.text.startswith(text(lang, "greeting")), reply.text
        assert plural(lang, "about", kept, languages=f"en {percent(lang, 1)}") in reply.text
        assert text(lang, "ask_me") in reply.text and text(lang, "help_plain") in reply.text
        assert "healthy restaurant" not in reply.text and "/retrain" not in reply.text
    # The same examples in every language (an English corpus): only the words around them change.
    helps = [(await ask(people, "/help", user)).text for user in USERS.values()]
    assert len({tuple(re.findall(r"/images (\S+)", h)) for h in helps}) == 1
    # An admin also learns the inline placeholder to give @BotFather.
    admin = await ask(people, "/help", ADMIN_ID)
    assert "/setinline" in admin.text and "/retrain" in admin.text
    assert admin.text.endswith(f"topicspace {__version__}")  # what an admin reports a problem with
    assert f"topicspace {__version__}" not in helps[0]


async def test_every_example_the_bot_shows_answers(people: LocalBotApi, engine_url: str) -> None:
    for lang, user in USERS.items():
        shown = (await ask(people, "/help", user)).text
        images = re.findall(r"/images (.+?) — ", shown)
        related = re.findall(r"/related (.+?) — ", shown)
        inline = re.findall(rf"@{BOT_USERNAME} (\S+)", shown)
        assert images and related and inline, shown
        assert any(" -" in q for q in images), shown  # a subtraction pair that answers
        for query in images:
            truth = await engine_json(engine_url, "/v1/images", q=query.split(" lang:")[0], k=1)
            assert truth["images"] and not truth["unknown"], (query, truth)
            n = len(people.calls)
            await people.push(people.text_update(f"/images {query}", user_id=user))
            await people.wait_for("sendMediaGroup", from_chat(user), after=n)
            said = await people.wait_for("sendMessage", from_chat(user), after=n)
            assert said.text.startswith(text(lang, "images_for", q=query, first=1, last=6)), said.text
            assert text(lang, "dont_know", words="")[:8] not in said.text
        for word in related:
            reply = await ask(people, f"/related {word}", user)
            assert reply.text.startswith(text(lang, "words_near", q=word)) and "reply_markup" in reply.params
        for query in inline:
            n = len(people.calls)
            await people.push(people.inline_update(query, user_id=user))
            answer = await people.wait_for("answerInlineQuery", after=n)
            assert answer.json("results"), query


async def test_menus_per_language_and_retrain_for_admins_only(people: LocalBotApi) -> None:
    for lang in LANGUAGES:
        menu = people.command_sets[("default", None, "" if lang == EN else lang)]
        assert [c["command"] for c in menu] == list(COMMANDS)
        assert [c["description"] for c in menu] == [text(lang, f"cmd_{c}") for c in COMMANDS]
        admins = people.command_sets[("chat", ADMIN_ID, "" if lang == EN else lang)]
        assert [c["command"] for c in admins] == list(COMMANDS + ADMIN_COMMANDS)
    assert "retrain" not in people.menu(USERS[ES]) and "retrain" in people.menu(ADMIN_ID)
    assert people.commands == people.command_sets[("default", None, "")]


async def test_unknown_word_is_answered_politely_in_each_language(people: LocalBotApi) -> None:
    for lang, user in USERS.items():
        n = len(people.calls)
        reply = await ask(people, "/related qwzxv", user)
        assert reply.text.startswith(text(lang, "dont_know", words="qwzxv")), reply.text
        assert "reply_markup" not in reply.params
        await ask(people, "/related dog", user, starts=text(lang, "words_near", q="dog"))
        sent = [c for c in people.calls[n:] if c.params.get("chat_id") == str(user)]
        assert not [c for c in sent if c.error is not None or c.text == text(lang, "oops")]


async def test_stats_for_people_and_for_admins(people: LocalBotApi, engine_url: str) -> None:
    stats = await engine_json(engine_url, "/v1/stats")
    version = stats["version"]
    mine = await ask(people, "/stats", USERS[CA])
    assert mine.text.startswith(text(CA, "posts_kept", kept=300, total=300))
    top = ", ".join(w["word"] for w in stats["top_words"][:10])
    assert text(CA, "top_line", words=top) in mine.text
    assert version not in mine.text and "R@" not in mine.text and "r1" not in mine.text
    admin = await ask(people, "/stats", ADMIN_ID)
    assert text(ES, "version_line", version=version) in admin.text and "r1 " in admin.text
    await people.wait_for("sendPhoto", lambda c: c.params.get("chat_id") == str(USERS[CA]))  # the map


async def test_attraction_ranking(people: LocalBotApi, engine_url: str) -> None:
    ranking = (await engine_json(engine_url, "/v1/stats"))["report"]["attractions"]["ranking"]
    assert ranking == []  # the small bundle is trained without a topic file: no places to rank
    for lang, user in USERS.items():
        reply = await ask(people, "/attractions", user)
        assert reply.text == text(lang, "attractions_no_topic")
        assert "[[attractions]]" in reply.text and "0" not in reply.text


async def test_language_filter(people: LocalBotApi, engine_url: str) -> None:
    album = await ask(people, "/images dog lang:en", USERS[EN], method="sendMediaGroup")
    truth = (await engine_json(engine_url, "/v1/images", q="dog", k=6, lang="en"))["images"]
    assert [m["caption"] for m in album.json("media")] == [
        hit_caption(parse_images({"images": [h], "unknown": [], "confident": True, "version": "v"}).images[0])
        for h in truth
    ]
    refused = await ask(people, "/images gos lang:xx", USERS[CA])
    assert refused.text == text(CA, "unknown_lang", code="xx", codes="en")


def test_the_post_is_credited_with_its_link() -> None:
    def hit(**extra: object) -> dict[str, object]:
        return {"id": "B1a2C3d4E5f", "score": 0.5, "caption": "cervesa a la platja", "url": "/v1/images/x",
                **extra}
    body = {"images": [hit(user="ana"), hit(), hit(id="p~1", user="@joan", post_id="123_456.jpg"),
                       hit(id="B1a2C3d4E5f_2", user="marta")], "unknown": [], "confident": True,
            "version": "v"}
    instagram, anonymous, flickr, carousel = parse_images(body).images
    assert hit_caption(instagram).endswith("\nby @ana · https://www.instagram.com/p/B1a2C3d4E5f/")
    assert hit_caption(instagram, lang=CA).endswith("\nde @ana · https://www.instagram.com/p/B1a2C3d4E5f/")
    assert hit_caption(anonymous) == "0.50 · cervesa a la platja"  # the engine sends no user: no credit
    assert hit_caption(flickr).endswith("\nby @joan")  # not a shortcode: no link
    assert hit_caption(carousel).endswith("https://www.instagram.com/p/B1a2C3d4E5f/")


class _Engine:
    """Knows a few words per language, like a multilingual bundle would (for ``choose_examples``)."""

    WORDS: ClassVar[dict[str, set[str]]] = {
        "ca": {"gos", "platja"}, "es": {"perro", "playa"}, "en": {"dog", "beach"},
    }

    async def images(self, query: str, k: int = 6, offset: int = 0, lang: str | None = None) -> ImageAnswer:
        known = set().union(*self.WORDS.values()) if lang is None else self.WORDS.get(lang, set())
        unknown = [w.lstrip("-") for w in query.split() if w.lstrip("-") not in known]
        hit = ImageHit("p1", 0.9, "a caption", "/v1/images/p1")
        return ImageAnswer([] if unknown else [hit], unknown, True, "v")

    async def related(self, query: str, k: int = 10) -> RelatedAnswer:
        lang = next((code for code, words in self.WORDS.items() if query in words), None)
        if lang is None:
            return RelatedAnswer([], [query])
        return RelatedAnswer([ScoredWord(w, 0.8) for w in sorted(self.WORDS[lang] - {query})], [])


async def test_examples_follow_the_users_language_on_a_multilingual_bundle() -> None:
    def words(*ws: str) -> list[dict[str, object]]:
        return [{"word": w, "count": 10} for w in ws]
    stats = parse_stats({
        "version": "v", "n_images": 100, "n_words": 6, "filter_report": {}, "metrics": {},
        "languages": {"ca": 50, "es": 30, "en": 20}, "report_files": [],
        "top_words": words("xyzzy", "dog", "gos", "perro"),
        "report": {"top_words_by_language": {"ca": words("qwzxv", "gos", "platja"), "es": words("perro")}},
    })
    engine: Any = _Engine()
    catalan = await choose_examples(engine, stats, CA)
    assert catalan is not None and (catalan.images, catalan.subtract) == ("gos", "gos -platja")
    assert catalan.filtered == "gos lang:ca" and catalan.codes == ("ca", "es", "en")
    spanish = await choose_examples(engine, stats, ES)
    assert spanish is not None and spanish.images == "perro" and spanish.filtered == "perro lang:es"
    english = await choose_examples(engine, stats, EN)  # no English list: the overall top words
    assert english is not None and english.images == "dog" and english.filtered == "dog lang:en"


def _buttons(call: ApiCall) -> dict[str, str]:
    rows = call.json("reply_markup")["inline_keyboard"]
    return {b["text"]: b["callback_data"] for row in rows for b in row}


async def test_language_is_chosen_with_buttons_and_kept_across_a_restart(
    api: LocalBotApi, engine_url: str, tmp_path: Any,
) -> None:
    """A Spanish-speaking user whose Telegram app is in English picks Español: answers, the chat's menu
    and, after the bot restarts on the same state file, still Spanish; /language auto goes back."""
    user = USERS[EN]
    api.user_languages[user] = "en"
    settings = bot_settings(api, engine_url, state_store=str(tmp_path / "state.pickle"))
    async with running(build_application(settings)):
        pick = await ask(api, "/language", user)
        assert pick.text == text(EN, "language_pick", current=text(EN, "language_auto"))
        buttons = _buttons(pick)
        assert set(buttons) == {*LANGUAGE_NAMES.values(), text(EN, "language_auto")}
        n = len(api.calls)
        await api.push(api.callback_update(buttons["Español"], pick.result, user_id=user))
        await api.wait_for("sendMessage", from_chat(user, text(ES, "language_set")), after=n)
        await ask(api, "/start", user, starts=text(ES, "greeting"))
        album = await ask(api, "/images dog", user, method="sendMediaGroup")
        assert all(re.match(r"0,\d\d · ", m["caption"]) for m in album.json("media"))  # 0,80 not 0.80
        menu = api.command_sets[("chat", user, "")]
        assert [c["description"] for c in menu] == [text(ES, f"cmd_{c}") for c in COMMANDS]
    async with running(build_application(settings)):  # a new process: the choice comes from the state file
        await ask(api, "/help", user, starts=text(ES, "greeting"))
        await ask(api, "/language ca", user, starts=text(CA, "language_set"))
        await ask(api, "/related dog", user, starts=text(CA, "words_near", q="dog"))
        await ask(api, "/language auto", user, starts=text(EN, "language_auto_set"))
        await ask(api, "/start", user, starts=text(EN, "greeting"))
        assert ("chat", user, "") not in api.command_sets  # the chat follows the app's language again
        refused = await ask(api, "/language de", user)
        assert refused.text == text(EN, "language_unknown", example="es")
