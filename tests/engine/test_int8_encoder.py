"""The engine serves a bundle's int8 encoder when asked (ENGINE_ENCODER=int8), close to the fp32 one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient

from engine.app import create_app
from engine.model import load_model
from engine.service import ImageLimits, encode_image, hashtags
from space import bundle
from tests.engine.helpers import make_settings

LIMITS = ImageLimits(max_bytes=10 * 1024 * 1024, max_pixels=50_000_000)


def test_trainer_publishes_a_faithful_int8_encoder(small_bundle: Path) -> None:
    manifest = bundle.verify(small_bundle)  # the int8 file is sha256-listed like every other
    report = manifest["encoder_int8"]
    assert report["published"] and bundle.INT8_ENCODER in manifest["files"]
    assert report["fidelity"]["mean_cosine"] >= 0.99 and report["check_images"] > 0


def test_int8_session_answers_like_fp32(small_bundle: Path) -> None:
    fp32, int8 = load_model(small_bundle), load_model(small_bundle, encoder="int8")
    try:
        assert Path(int8.session._model_path).name == bundle.INT8_ENCODER  # which file ORT opened
        assert Path(fp32.session._model_path).name == bundle.ENCODER
        items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
        cos, overlap = [], []
        for item in items[:12]:
            data = Path(item["path"]).read_bytes()
            a, b = encode_image(fp32, data, LIMITS), encode_image(int8, data, LIMITS)
            cos.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
            ta = {t["word"] for t in json.loads(hashtags(fp32, a, 8))["hashtags"]}
            tb = {t["word"] for t in json.loads(hashtags(int8, b, 8))["hashtags"]}
            overlap.append(len(ta & tb) / 8)
        assert min(cos) > 0.98 and np.mean(cos) > 0.99, cos
        assert np.mean(overlap) >= 0.75, overlap
    finally:
        fp32.close()
        int8.close()


async def test_engine_serves_hashtags_with_int8(aiohttp_client: Any, small_bundle_models: Path,
                                                small_bundle: Path) -> None:
    client: TestClient = await aiohttp_client(create_app(make_settings(small_bundle_models, encoder="int8")))
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
    r = await client.post("/v1/hashtags", params={"k": "5"}, data=Path(items[0]["path"]).read_bytes())
    assert r.status == 200 and len((await r.json())["hashtags"]) == 5
