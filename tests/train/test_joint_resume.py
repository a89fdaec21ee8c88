"""The joint map saves a checkpoint each epoch and, killed (SIGKILL) mid-training, resumes from it to the
very model an uninterrupted run trains (issue 26, item 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.train.joint_resume_worker import CONFIG, train
from train.recipes.joint.model import JointModel

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "train" / "joint_resume_worker.py"


def test_a_killed_joint_training_resumes_from_its_checkpoint(flickr8k_dir: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    out = tmp_path / "joint.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(WORKER), str(flickr8k_dir), str(checkpoint), str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not checkpoint.is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint in 300 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stderr:
        proc.stderr.close()
    assert not out.exists(), "the training finished before it was killed"

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "joint: resuming after epoch" in resumed.stderr
    epochs_run = resumed.stderr.count("joint epoch ")
    assert 0 < epochs_run < CONFIG.epochs  # it did not start over

    got = JointModel.load(out)
    whole = train(flickr8k_dir, tmp_path / "uninterrupted.pt")  # the same training, never stopped
    assert [h["loss"] for h in got.history] == [h["loss"] for h in whole.history]
    for name in ("weight", "bias", "words"):
        np.testing.assert_array_equal(getattr(got, name), getattr(whole, name))
