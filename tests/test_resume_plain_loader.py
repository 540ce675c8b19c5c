"""A train loader that keeps no position in checkpoints (a plain torch DataLoader) cannot resume exactly: the
resume says so once, with what to use instead."""

from __future__ import annotations

import pytest
import torch
from test_checkpoint import CrashAt

from lazytrain.config import L
from lazytrain.engine import train_main


def plain_loader_config(toy_config, *overrides):
    cfg = toy_config("train.max_iter=6", "train.checkpoint_period=2", "train.eval_period=0", *overrides)
    cfg.dataloader.train = L(torch.utils.data.DataLoader)(
        dataset=cfg.dataloader.train.dataset, batch_size=32, shuffle=True
    )
    return cfg


def test_resume_with_a_plain_dataloader_says_once_it_is_not_exact_and_how_to_get_exact(toy_config, log_lines):
    cfg = plain_loader_config(toy_config)
    cfg.hooks = [L(CrashAt)(iteration=3)]
    with pytest.raises(KeyboardInterrupt):  # a crash after the checkpoint of iteration 2
        train_main(cfg)
    train_main(plain_loader_config(toy_config), resume=True)
    said = [line for line in log_lines if "keeps no position in checkpoints" in line]
    assert len(said) == 1, said
    assert said[0].startswith("WARNING lazytrain.engine.resume: --resume: the train loader (DataLoader)")
    assert "use lazytrain.data.build_train_loader" in said[0]


def test_resume_with_build_train_loader_says_nothing_about_the_loader(toy_config, log_lines):
    cfg = toy_config("train.max_iter=6", "train.checkpoint_period=2", "train.eval_period=0")
    cfg.hooks = [L(CrashAt)(iteration=3)]
    with pytest.raises(KeyboardInterrupt):  # a crash after the checkpoint of iteration 2
        train_main(cfg)
    train_main(toy_config("train.max_iter=6", "train.checkpoint_period=2", "train.eval_period=0"), resume=True)
    assert not [line for line in log_lines if "keeps no position" in line]
    assert any("Resumed from" in line for line in log_lines)
