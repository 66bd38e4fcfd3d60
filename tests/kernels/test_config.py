"""The kernels' process-wide settings (kernels/config.py): read from TAPE_<FIELD> once,
changed with kernels.configure (for good or for a block), checked, and thread-safe."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading

import pytest

import kernels
from kernels import config


def test_every_field_has_its_environment_variable():
    env = {"TAPE_NUM_THREADS": "3", "TAPE_TUNE_THREADS": "0", "TAPE_BUFFERS": "0",
           "TAPE_PRECOMPILE": "0", "TAPE_WINOGRAD_MIN_CHANNELS": "16",
           "TAPE_WINOGRAD_FUSED_MAX_CHANNELS": "0"}
    got = config._from_environment(env)
    assert got == config.Config(num_threads=3, tune_threads=False, buffers=False,
                                precompile=False, winograd_min_channels=16,
                                winograd_fused_max_channels=0)
    assert config._from_environment({}) == config.Config()
    with pytest.raises(ValueError, match="TAPE_NUM_THREADS must be a whole number .*'two'"):
        config._from_environment({"TAPE_NUM_THREADS": "two"})
    with pytest.raises(ValueError, match="TAPE_NUM_THREADS .*at least 1"):
        config._from_environment({"TAPE_NUM_THREADS": "0"})


def test_the_environment_is_read_at_import():
    code = "import kernels; c = kernels.config.current(); print(c.num_threads, c.buffers)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, TAPE_NUM_THREADS="3",
                                              TAPE_BUFFERS="0", TAPE_PRECOMPILE="0"))
    assert out.stdout.split() == ["3", "False"]


def test_configure_changes_for_good_or_for_a_block():
    before = config.current()
    with kernels.configure(winograd_min_channels=99, buffers=False) as inside:
        assert config.current() is inside
        assert (inside.winograd_min_channels, inside.buffers) == (99, False)
        assert inside.num_threads == before.num_threads  # the others as they were
    assert config.current() == before
    kernels.configure(winograd_fused_max_channels=7)
    try:
        assert config.current().winograd_fused_max_channels == 7
    finally:
        kernels.configure(winograd_fused_max_channels=before.winograd_fused_max_channels)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.current().buffers = False  # a snapshot: changed only through configure


@pytest.mark.parametrize("changes, error, match", [
    ({"num_threads": 0}, ValueError, "at least one thread"),
    ({"num_threads": 2.0}, ValueError, "whole number"),
    ({"buffers": 0}, ValueError, "True or False"),
    ({"winograd_min_channels": -1}, ValueError, "at least 0"),
    ({"winograd_channels": 8}, TypeError, "no setting 'winograd_channels'"),
])
def test_bad_settings_are_refused_and_change_nothing(changes, error, match):
    before = config.current()
    with pytest.raises(error, match=match):
        kernels.configure(**changes)
    assert config.current() is before


def test_concurrent_changes_lose_none():
    """Each thread sets its own field under the lock: every change survives."""
    before = config.current()
    fields = ["winograd_min_channels", "winograd_fused_max_channels"]

    def bump(name):
        for _ in range(500):
            kernels.configure(**{name: getattr(config.current(), name) + 1})

    try:
        workers = [threading.Thread(target=bump, args=(f,)) for f in fields]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        for f in fields:
            assert getattr(config.current(), f) == getattr(before, f) + 500
    finally:
        kernels.configure(**{f: getattr(before, f) for f in fields})
