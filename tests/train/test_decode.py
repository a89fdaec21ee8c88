"""Decoding for the encoders (train/image/decode.py) on real Flickr8k photos: the uint8 views a worker and
the main process cut equal `space.images.network_views` exactly, and worker processes (or threads) stream
the photos back in the order asked, an unreadable file as its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from space.images import network_views, open_image
from train.image.decode import Decoder, decode_pixels, network_batch, views_of


@pytest.mark.parametrize("crops", [1, 2, 10])
def test_views_equal_network_views(flickr8k_dir: Path, crops: int) -> None:
    for photo in sorted((flickr8k_dir / "images").glob("*.jpg"))[:12]:
        pixels = decode_pixels(str(photo), crops)
        assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(network_batch(views_of(pixels, crops)),
                                      network_views(open_image(photo), crops))


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
