"""Issue 28: the trainer loads checkpoints as data only.

The models folder (where the stage cache and its checkpoints live) is mounted read-write by the engine
too; ``torch.load(weights_only=False)`` ran whatever a pickled checkpoint planted there asked for.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from train.recipes.seed.regressor import read_checkpoint


class _Planted:
    """Unpickling this touches a file: the stand-in for any code an attacker's checkpoint runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_a_checkpoint_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "regressor.pt"
    torch.save({"config": {}, "model": {}, "history": [_Planted(marker)]}, path)
    with pytest.raises(pickle.UnpicklingError):
        read_checkpoint(path)
    assert not marker.exists()


def test_checkpoints_of_earlier_trainers_still_load(tmp_path: Path) -> None:
    """Before, target_min/target_max were numpy arrays: they are the one object kind let through."""
    path = tmp_path / "old.pt"
    tmin = np.linspace(-1, 1, 5, dtype=np.float32)
    torch.save({"target_min": tmin, "target_max": tmin + 1, "model": {"w": torch.ones(2)},
                "history": [{"epoch": 0, "val_loss": 0.5}]}, path)
    ckpt = read_checkpoint(path)
    assert np.array_equal(np.asarray(ckpt["target_min"]), tmin) and ckpt["history"][0]["epoch"] == 0
