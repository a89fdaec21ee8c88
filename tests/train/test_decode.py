"""Decoding for the encoders (train/image/decode.py) on real Flickr8k photos: the uint8 views a worker and
the main process cut equal `space.images.network_views` exactly, and worker processes (or threads) stream
the photos back in the order asked, an unreadable file as its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from space.images import network_views, open_image
from train.image.decode import Decoder, decode_pixels, network_batch, views_of


@pytest.mark.parametrize(("crops", "framing"), [(1, "centre"), (2, "centre"), (10, "centre"), (1, "whole"),
                                               (2, "whole")])
def test_views_equal_network_views(flickr8k_dir: Path, tmp_path: Path, crops: int, framing: str) -> None:
    photos = sorted((flickr8k_dir / "images").glob("*.jpg"))[:12]
    wide = tmp_path / "wide.jpg"  # Flickr8k's photos are square: one that is not, too
    Image.open(photos[0]).resize((400, 260)).save(wide, quality=90)
    for photo in [*photos, wide]:
        pixels = decode_pixels(str(photo), crops, framing)
        assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(network_batch(views_of(pixels, crops)),
                                      network_views(open_image(photo), crops, framing))


@pytest.mark.parametrize("processes", [True, False])
def test_workers_stream_in_order_with_the_broken_file_as_its_reason(flickr8k_dir: Path, tmp_path: Path,
                                                                    processes: bool) -> None:
    photos = sorted((flickr8k_dir / "images").glob("*.jpg"))[:20]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:1500])
    photos.insert(7, broken)
    order = [5, 7, 0, 19, 3, *range(8, 20)]
    with Decoder(2, 1, processes=processes) as decoder:
        got = list(decoder.stream(photos, order, window=2))
    assert [i for i, _ in got] == order
    for i, pixels in got:
        if i == 7:
            assert isinstance(pixels, str) and "read" in pixels  # BadImage: "not an image we can read"
        else:
            assert isinstance(pixels, np.ndarray) and pixels.shape == (224, 224, 3)
