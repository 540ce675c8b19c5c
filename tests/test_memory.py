"""Memory and fine-tuning settings: activation checkpointing, autocast inside chosen modules, frozen norm layers
held in eval mode (lazytrain/engine/memory.py), on the flagship model at a narrow width and the toy project."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from conftest import REPO, TOY, cli_env, load_config
from test_checkpoint import CrashAt

from lazytrain.checkpoint import read_checkpoint
from lazytrain.config import LazyCall as L
from lazytrain.config import instantiate
from lazytrain.engine import build_trainer, train_main
from lazytrain.engine.memory import (
    autocast_modules,
    checkpoint_modules,
    hold_frozen_norm_layers,
    match_modules,
)
from lazytrain.errors import ConfigError
from lazytrain.lidar import RangeNet
from lazytrain.lidar.synthetic import write_synthetic_kitti


def flagship(dropout: float = 0.05) -> RangeNet:
    torch.manual_seed(0)
    return RangeNet(in_channels=5, num_classes=20, width=4, depth=2, dropout=dropout)


def flagship_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(2, 5, 8, 32, generator=g),
        "label_image": torch.randint(0, 20, (2, 8, 32), generator=g),
    }


def gradients_and_stats(model: torch.nn.Module, batch: dict[str, torch.Tensor], seed: int = 5):
    model.train()
    torch.manual_seed(seed)  # the dropout mask
    model(batch)["loss_ce"].backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return grads, {name: b.clone() for name, b in model.named_buffers()}


def assert_all_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_patterns_match_the_outermost_modules_in_the_models_order():
    model = flagship()
    assert match_modules(model, ["down.*", "stem"], "train.activation_checkpointing") == ["stem", "down.0", "down.1"]
    assert match_modules(model, ["down.1.*"], "k") == ["down.1.0", "down.1.1"]
    assert match_modules(model, ["down"], "k") == ["down.0", "down.1"]  # a ModuleList is never called itself


@pytest.mark.parametrize("key", ["train.activation_checkpointing", "train.amp.modules"])
def test_a_pattern_that_matches_no_module_names_the_close_ones(toy_config, key):
    with pytest.raises(ConfigError) as info:
        build_trainer(toy_config("train.amp.enabled=True", f"{key}=['net.0', 'nett']"))
    assert str(info.value) == (
        f"command line: {key}.1: the pattern 'nett' matches no module of MLPClassifier. Did you mean 'net'? "
        "Its top-level modules are net."
    )
    assert info.value.exit_code == 2


def test_a_parameter_name_instead_of_a_module_name_is_explained():
    with pytest.raises(ConfigError, match="It matches parameter names: these patterns match module names"):
        match_modules(flagship(), ["head.weight"], "train.activation_checkpointing")


def test_state_dict_keys_and_parameter_names_are_unchanged_and_load_both_ways():
    plain, changed = flagship(), flagship()
    hold_frozen_norm_layers(changed, [])
    checkpoint_modules(changed, match_modules(changed, ["stem", "down.*", "up.*"], "k"))
    autocast_modules(changed, ["down.0"], "cpu", torch.bfloat16)
    assert list(changed.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in changed.named_parameters()] == [n for n, _ in plain.named_parameters()]
    changed.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(changed.state_dict(), strict=True)


def test_gradients_and_statistics_equal_with_and_without_activation_checkpointing_on_the_flagship():
    batch = flagship_batch()
    plain = flagship()
    grads, stats = gradients_and_stats(plain, batch)
    checkpointed = flagship()
    checkpoint_modules(checkpointed, match_modules(checkpointed, ["stem", "down.*", "up.*"], "k"))
    grads_ckpt, stats_ckpt = gradients_and_stats(checkpointed, batch)
    assert_all_close(grads, grads_ckpt)
    # the recomputation in backward runs batch norm in train mode again: its statistics still move once
    assert_all_close(stats, stats_ckpt)
    assert not torch.equal(stats["stem.0.1.running_mean"], flagship().stem[0][1].running_mean)


def test_dropout_under_recomputation_draws_the_same_mask():
    batch = flagship_batch()
    grads, _ = gradients_and_stats(flagship(dropout=0.5), batch)
    other_mask, _ = gradients_and_stats(flagship(dropout=0.5), batch, seed=6)
    assert not torch.allclose(grads["head.weight"], other_mask["head.weight"])  # the mask matters
    checkpointed = flagship(dropout=0.5)
    checkpoint_modules(checkpointed, match_modules(checkpointed, ["dropout", "up.*"], "k"))
    grads_ckpt, _ = gradients_and_stats(checkpointed, batch)
    assert_all_close(grads, grads_ckpt)


def test_evaluation_without_gradients_runs_the_plain_forward():
    model = flagship()
    checkpoint_modules(model, ["stem"])
    model.eval()
    with torch.no_grad():
        out = model(flagship_batch())
    plain = flagship().eval()
    assert torch.equal(out, plain(flagship_batch()).detach())


def test_an_fp32_head_under_bf16_autocast_of_the_backbone():
    model = flagship()
    autocast_modules(model, match_modules(model, ["stem", "down.*"], "train.amp.modules"), "cpu", torch.bfloat16)
    dtypes: dict[str, torch.dtype] = {}
    inputs: dict[str, torch.Tensor] = {}
    for name in ("stem.0.0", "down.1.0.0", "up.0.0", "head"):
        module = dict(model.named_modules())[name]
        module.register_forward_hook(lambda m, args, out, name=name: dtypes.__setitem__(name, out.dtype))
    model.head.register_forward_hook(lambda m, args, out: inputs.__setitem__("head", args[0]))
    model.train()
    loss = model(flagship_batch())["loss_ce"]
    loss.backward()
    assert dtypes == {"stem.0.0": torch.bfloat16, "down.1.0.0": torch.bfloat16, "up.0.0": torch.float32,
                      "head": torch.float32}  # fmt: skip
    head_in_fp32 = torch.nn.functional.conv2d(inputs["head"], model.head.weight, model.head.bias)
    assert torch.equal(model.head(inputs["head"]), head_in_fp32)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_whole_step_autocast_is_off_when_amp_modules_is_set(toy_config):
    def head_dtype(*overrides: str) -> torch.dtype:
        trainer = build_trainer(toy_config("train.max_iter=1", "train.amp.enabled=True", *overrides))
        seen = []
        trainer.model.net[3].register_forward_hook(lambda m, args, out: seen.append(out.dtype))
        trainer.train(0, 1)
        return seen[0]

    assert head_dtype() == torch.bfloat16
    assert head_dtype("train.amp.modules=['net.0']") == torch.float32


def test_held_norm_layers_stay_in_eval_mode_through_train_and_eval_and_copies():
    model = flagship()
    for p in model.stem.parameters():
        p.requires_grad_(False)
    assert hold_frozen_norm_layers(model, ["stem.*"]) == ["stem.0.1", "stem.1.bn1", "stem.1.bn2"]
    model.train()
    model.eval()
    model.train()
    assert not model.stem[0][1].training and model.down[0][0][1].training and model.training
    ema = copy.deepcopy(model)  # as the EMA's AveragedModel copies it
    ema.train()
    assert not ema.stem[1].bn1.training
    ema.stem[1].bn1.train = lambda mode=True: None  # the copy's train is its own
    model.train()
    assert not model.stem[1].bn1.training


def test_a_deep_copy_runs_its_own_weights():
    model = flagship()
    checkpoint_modules(model, ["stem", "head"])
    autocast_modules(model, ["down.0"], "cpu", torch.bfloat16)
    ema = copy.deepcopy(model).eval()
    with torch.no_grad():
        ema.head.weight.zero_()
        logits = ema(flagship_batch())
    assert torch.equal(logits, ema.head.bias.view(1, -1, 1, 1).expand_as(logits))


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    write_synthetic_kitti(str(root), ["00", "08"], scans=2, seed=3, columns=256)
    return root


def flagship_fine_tune(tmp_path, kitti_root, name: str, *overrides: str) -> dict[str, torch.Tensor]:
    """Three iterations of a fine-tune of the flagship with an evaluation after the second (eval() then
    train()); the final checkpoint's model state."""
    common = [f"dataset.root={kitti_root}", "dataset.projection.width=64", "dataset.projection.height=16",
              "model.width=4", "model.depth=2", "model.class_weights=null", "evaluator.picture_scans=0",
              "dataloader.train.dataset.sequences=['00']", "dataloader.test.dataset.sequences=['08']",
              "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", "dataloader.train.batch_size=2",
              "train.max_iter=3", "train.eval_period=2", "train.checkpoint_period=0"]  # fmt: skip
    cfg = load_config(REPO / "configs" / "kitti_seg.py", *common, f"train.output_dir={tmp_path / name}", *overrides)
    init = tmp_path / "init.pth"
    if not init.exists():
        torch.save({"model": instantiate(cfg.model).state_dict()}, init)
    cfg.train.init_checkpoint = str(init)
    train_main(cfg)
    return read_checkpoint(str(tmp_path / name / "checkpoints" / "model_final.pth"))["model"]


def test_frozen_batch_norm_statistics_stay_during_a_flagship_fine_tune(tmp_path, kitti_root):
    held = flagship_fine_tune(tmp_path, kitti_root, "held", "train.freeze=['stem.*']")
    init = torch.load(tmp_path / "init.pth")["model"]
    stem_stats = [k for k in init if k.startswith("stem.") and "running" in k]
    assert len(stem_stats) == 6 and all(torch.equal(held[k], init[k]) for k in stem_stats)
    assert not torch.equal(held["down.0.0.1.running_mean"], init["down.0.0.1.running_mean"])  # trained ones move

    moving = flagship_fine_tune(tmp_path, kitti_root, "opt_out", "train.freeze=['stem.*']",
                                "train.freeze_norm_eval=False")  # fmt: skip
    assert not torch.equal(moving["stem.0.1.running_mean"], init["stem.0.1.running_mean"])
    assert torch.equal(moving["stem.0.0.weight"], init["stem.0.0.weight"])  # still frozen weights


def test_a_checkpoint_written_with_activation_checkpointing_resumes_without_it(tmp_path):
    common = ["train.max_iter=12", "train.checkpoint_period=4", "train.deterministic=True", "train.eval_period=0"]
    full = load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'full'}", *common)
    train_main(full)
    parts = load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'parts'}", *common,
                        "train.activation_checkpointing=['net.0', 'net.3']")  # fmt: skip
    parts.hooks.append(L(CrashAt)(iteration=6))
    with pytest.raises(KeyboardInterrupt):
        train_main(parts)
    train_main(load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'parts'}", *common), resume=True)
    a = read_checkpoint(str(tmp_path / "full" / "checkpoints" / "model_final.pth"))["model"]
    b = read_checkpoint(str(tmp_path / "parts" / "checkpoints" / "model_final.pth"))["model"]
    assert_all_close(a, b)


def test_hooks_command_lists_both_settings_with_what_they_matched():
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "hooks", str(REPO / "configs" / "kitti_seg.py"), "model.width=4",
         "train.freeze=['stem.*']", "train.activation_checkpointing=['down.*', 'up.0']", "train.amp.enabled=True",
         "train.amp.modules=['stem']"],
        capture_output=True, text=True, env=cli_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    settings = r.stdout.split("settings (no hooks, but they change training):\n")[1].splitlines()
    assert settings[-3:] == [
        "    train.activation_checkpointing  ['down.*', 'up.0']: 4 modules (down.0, down.1, down.2, up.0) recomputed "
        "in backward",
        "    train.amp.modules               ['stem']: bf16 autocast inside 1 module (stem); the rest in fp32",
        "    train.freeze_norm_eval          True: 3 norm layers (stem.0.1, stem.1.bn1, stem.1.bn2) of frozen modules "
        "held in eval mode (statistics kept)",
    ]
