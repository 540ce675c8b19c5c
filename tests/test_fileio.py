"""Atomic writes (lazytrain.fileio): never a half-written file, readable by teammates, the disk-full message."""

from __future__ import annotations

import os

import pytest

from lazytrain.fileio import atomic_write, describe_write_error
from lazytrain.images import write_png


def test_atomic_write_that_fails_midway_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "config.yaml"
    atomic_write(str(path), "old: 1\n")

    def fails(f):
        f.write(b"new: ")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(str(path), fails)
    assert path.read_text() == "old: 1\n" and os.listdir(tmp_path) == ["config.yaml"]


def test_a_write_that_need_not_survive_a_power_loss_is_still_never_half_written(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    atomic_write(str(tmp_path / "a.label"), b"\x01\x00\x00\x00", durable=False)
    assert synced == [] and (tmp_path / "a.label").read_bytes() == b"\x01\x00\x00\x00"
    atomic_write(str(tmp_path / "b.yaml"), "b: 1\n")
    assert len(synced) == 2  # the file, then its folder
    write_png(str(tmp_path / "pictures" / "p.png"), __import__("numpy").zeros((2, 3), dtype="uint8"))
    assert sorted(os.listdir(tmp_path)) == ["a.label", "b.yaml", "pictures"]  # no temp file left behind
    assert os.listdir(tmp_path / "pictures") == ["p.png"]


def test_the_disk_full_message_names_the_error_code_first_and_the_free_space(tmp_path):
    text = describe_write_error(OSError(28, "No space left on device"), str(tmp_path / "model.pth"), 3 << 20)
    assert text.startswith(f"cannot write {tmp_path / 'model.pth'}: [Errno 28] No space left on device (ENOSPC)")
    assert f"{tmp_path} has " in text


def free_space(monkeypatch, free: int) -> None:
    import shutil
    import types

    monkeypatch.setattr(shutil, "disk_usage", lambda folder: types.SimpleNamespace(total=100 << 20, free=free))


def test_the_disk_full_message_says_what_the_file_needs_when_it_does_not_fit(tmp_path, monkeypatch):
    free_space(monkeypatch, 1 << 20)
    text = describe_write_error(OSError(28, "No space left on device"), str(tmp_path / "model.pth"), 3 << 20)
    assert text.endswith(f"; {tmp_path} has 1 MB free and this file needs about 3 MB")


def test_the_disk_full_message_never_says_a_file_needs_less_than_is_free(tmp_path, monkeypatch):
    free_space(monkeypatch, 12 << 20)
    text = describe_write_error(OSError(28, "No space left on device"), str(tmp_path / "model.pth"), 3 << 20)
    assert "needs" not in text
    assert f"{tmp_path} has 12 MB free now, more than the file's ~3 MB, after the partial file was removed" in text
    assert "(the disk filled up while it was written" in text
