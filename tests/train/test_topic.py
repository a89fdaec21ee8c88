"""Any topic: a topic file names the topic, the other cities to drop, its attractions and languages.

Barcelona ships as the example (topics/barcelona.toml); a corpus about another city keeps its posts, and
without a topic file nothing is dropped as another city and the filter report says the filter was skipped.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import ROOT
from train.__main__ import build_parser, pipeline_config
from train.assemble import bundle_manifest
from train.config import FilterConfig
from train.corpus.filters import run_filters
from train.corpus.posts import Post
from train.corpus.topic import Topic, TopicInvalid, load_topic, topic_from_dict
from train.report import ReportConfig
from train.report.text_analyses import count_attractions

BARCELONA = ROOT / "topics" / "barcelona.toml"


class _Stub(SimpleNamespace):
    """A stage result for bundle_manifest: the given fields, and an empty record for any other."""

    def __getattr__(self, name: str) -> Any:
        return {}


def _post(i: int, caption: str) -> Post:
    return Post(id=f"p{i}", image=Path(f"/nonexistent/{i}.jpg"), caption=caption, user=f"u{i}")


def _keep_cities_only(cities: tuple[str, ...]) -> FilterConfig:
    return FilterConfig(min_words=0, languages=(), max_posts_per_user=None, other_cities=cities,
                        drop_duplicates=False, check_images=False)


def test_barcelona_ships_as_the_example() -> None:
    topic = load_topic(BARCELONA)
    assert topic.name == "Barcelona" and "bcn" in topic.aliases
    assert topic.languages == ("en", "es", "ca")
    assert {"madrid", "paris", "new york"} <= set(topic.other_cities) and len(topic.other_cities) > 90
    names = [a.name for a in topic.attractions]
    assert names[:2] == ["Sagrada Família", "Park Güell"] and len(names) == 20
    sagrada = topic.attractions[0]
    assert sagrada.aliases[0] == "sagrada família" and "sagradafamilia" in sagrada.aliases
    # The topic's own names are never in the list it drops.
    assert "barcelona" not in {c.lower() for c in topic.cities_to_drop()}


def test_a_madrid_corpus_keeps_its_posts_even_with_barcelonas_city_list() -> None:
    barcelona = load_topic(BARCELONA)
    madrid = topic_from_dict({"name": "Madrid", "aliases": ["Madriz", "MAD"],
                              "other_cities": [*barcelona.other_cities, "Barcelona"]}, "madrid.toml")
    posts = [_post(0, "Atardecer en el templo de Debod, Madrid"), _post(1, "Paseo por Madriz"),
             _post(2, "Weekend in Barcelona"), _post(3, "De tapas por Málaga")]
    result = run_filters(posts, _keep_cities_only(madrid.cities_to_drop()))
    assert [p.id for p in result.kept] == ["p0", "p1"]
    assert result.dropped_ids["city"] == ["p2", "p3"]


def test_without_a_topic_nothing_is_dropped_as_another_city_and_the_report_says_so() -> None:
    posts = [_post(0, "Sunset in Paris"), _post(1, "Snow in New York")]
    result = run_filters(posts, _keep_cities_only(FilterConfig().other_cities))
    assert len(result.kept) == 2 and result.report["dropped"]["city"] == 0
    assert any(s.startswith("city (no other cities configured") for s in result.report["skipped_filters"])


def _cfg(*args: str, env: dict[str, str] | None = None, monkeypatch: pytest.MonkeyPatch | None = None):
    if monkeypatch is not None:
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
    return pipeline_config(build_parser().parse_args(["filter", "--corpus", "c", "--format", "jsonl", *args]))


def test_command_line_topic_cities_languages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAIN_TOPIC", raising=False)
    plain = _cfg()
    assert plain.topic is None and plain.filters.other_cities == ()
    assert plain.filters.languages == ("en", "es", "ca")
    with_topic = _cfg("--topic", str(BARCELONA))
    assert with_topic.topic is not None and with_topic.topic.name == "Barcelona"
    assert with_topic.filters.other_cities == load_topic(BARCELONA).cities_to_drop()
    # TRAIN_TOPIC is how /retrain jobs (and the compose trainer) pass it.
    assert _cfg(env={"TRAIN_TOPIC": str(BARCELONA)}, monkeypatch=monkeypatch).topic == with_topic.topic
    monkeypatch.delenv("TRAIN_TOPIC")
    # A topic's languages are the default; the flag wins.
    mine = tmp_path / "lisboa.toml"
    mine.write_text('name = "Lisboa"\naliases = ["lisbon"]\nlanguages = ["pt", "en"]\n'
                    'other_cities = ["porto", "lisbon", "madrid"]\n', encoding="utf-8")
    lisboa = _cfg("--topic", str(mine))
    assert lisboa.filters.languages == ("pt", "en") and lisboa.filters.other_cities == ("porto", "madrid")
    assert _cfg("--topic", str(mine), "--languages", "pt").filters.languages == ("pt",)
    # --cities replaces the topic's list, still less the topic's own names.
    cities = tmp_path / "cities.txt"
    cities.write_text("# mine\nsevilla\nLisbon\n\n", encoding="utf-8")
    assert _cfg("--topic", str(mine), "--cities", str(cities)).filters.other_cities == ("sevilla",)
    assert _cfg("--cities", str(cities)).filters.other_cities == ("sevilla", "Lisbon")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('aliases = ["x"]\n', "name"),
        ('name = "X"\nother_citie = ["y"]\n', "unknown keys ['other_citie']"),
        ('name = "X"\nother_cities = "paris"\n', "other_cities must be a list of strings"),
        ('name = "X"\n[[attractions]]\naliases = ["y"]\n', "attraction 1 needs a name"),
        ('name = "X"\n[[attractions]]\nname = "Y"\nalias = ["y"]\n', "unknown keys ['alias']"),
        ("name = \n", "cannot be read"),
    ],
)
def test_bad_topic_files_are_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TopicInvalid) as info:
        load_topic(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TopicInvalid, match="not found"):
        load_topic(tmp_path / "missing.toml")


def test_the_report_ranks_the_topics_attractions_and_the_manifest_records_the_topic() -> None:
    topic = load_topic(BARCELONA)
    posts = [_post(0, "Sunset at #parkguell"), _post(1, "La Sagrada Familia and Park Güell in one day"),
             _post(2, "Vermut a la Barceloneta")]
    ranked = {e["name"]: e for e in count_attractions(posts, topic.attractions)}
    assert ranked["Park Güell"]["mentions"] == 2 and ranked["Park Güell"]["rank"] == 1
    assert ranked["Sagrada Família"]["mentions"] == 1 and ranked["Barceloneta"]["mentions"] == 1
    rcfg = ReportConfig(**topic.report_places())
    assert rcfg.attractions == topic.attractions and ReportConfig().attractions == ()
    cfg = _cfg("--topic", str(BARCELONA))
    side = _Stub(n_posts=3, text=_Stub(stats={}))
    image_side = _Stub()
    kept = _Stub(posts=posts)
    manifest = bundle_manifest(cfg, side, image_side, kept, {}, rcfg, {}, None, {})  # type: ignore[arg-type]
    assert manifest["topic"] == topic.to_dict()
    assert manifest["topic"]["name"] == "Barcelona"
    assert manifest["topic"]["attractions"][0] == "Sagrada Família"
    assert manifest["config"]["filters"]["other_cities"] == list(topic.cities_to_drop())
    plain = bundle_manifest(_cfg(), side, image_side, kept, {}, ReportConfig(), {}, None, {})  # type: ignore[arg-type]
    assert plain["topic"] is None


def test_topic_equality_ignores_where_it_was_read() -> None:
    assert Topic("X", source="a.toml") == Topic("X", source="b.toml")


def test_a_redrawn_report_ranks_the_places_the_bundle_was_trained_with() -> None:
    from train.report import _places

    topic = load_topic(BARCELONA)
    entries = [{"name": a.name, "aliases": list(a.aliases)} for a in topic.attractions]
    manifest_report = {"attractions": entries, "reference_ranking": ["Sagrada Família"]}
    places = _places(manifest_report)
    assert places["attractions"] == topic.attractions and places["reference_ranking"] == ("Sagrada Família",)
    assert _places({"attractions": []}) == {} and _places({}) == {}
