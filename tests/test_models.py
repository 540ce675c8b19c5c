"""The field's models equal to their authors' networks: RangeNet++ (Darknet21 / Darknet53, PRBonn/lidar-bonnetal).
Parameter counts, release keys and outputs for seeded weights are facts recorded from the authors' code
(tools/record_darknet_facts.py, run outside the repository), not a copy of it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, cli_env, load_config
from release_facts import read_facts, seeded_input, seeded_state

from lazytrain.checkpoint import load_inference_weights, load_init_weights
from lazytrain.config import instantiate
from lazytrain.errors import ConfigError
from lazytrain.lidar import RangeNetPP

RELEASE_FILES = {"backbone": "backbone", "segmentation_decoder": "decoder", "segmentation_head": "head"}


def write_release(folder, files: dict[str, dict[str, torch.Tensor]], layers: int, classes: int = 20) -> str:
    """A folder as lidar-bonnetal writes it (Segmentator.save_checkpoint) with the yaml files of a release."""
    os.makedirs(folder, exist_ok=True)
    for name, state in files.items():
        torch.save(state, os.path.join(folder, name))
    arch = {"backbone": {"name": "darknet", "input_depth": {"range": True, "xyz": True, "remission": True},
                         "dropout": 0.01, "bn_d": 0.01, "OS": 32, "extra": {"layers": layers}},
            "decoder": {"name": "darknet"}, "post": {"CRF": {"use": False}}}  # fmt: skip
    with open(os.path.join(folder, "arch_cfg.yaml"), "w") as f:
        yaml.safe_dump(arch, f)
    with open(os.path.join(folder, "data_cfg.yaml"), "w") as f:
        yaml.safe_dump({"learning_map_inv": {i: i for i in range(classes)}}, f)
    return str(folder)


def release_of(model: RangeNetPP) -> dict[str, dict[str, torch.Tensor]]:
    """Our model's weights split into the release's three files under the authors' key names."""
    own = model.state_dict()
    return {name: {k[len(prefix) + 1 :]: v for k, v in own.items() if k.startswith(prefix + ".")}
            for name, prefix in RELEASE_FILES.items()}  # fmt: skip


@pytest.mark.parametrize("layers", [21, 53])
def test_parameters_and_release_keys_equal_the_authors(layers):
    facts = read_facts(f"rangenet_darknet{layers}.json")
    model = RangeNetPP(layers)
    count = sum(p.numel() for p in model.parameters())
    print(f"RangeNet++ Darknet{layers}: {count} parameters (the authors': {facts['parameters']})")
    assert count == facts["parameters"]
    ours = {name: {k: list(v.shape) for k, v in files.items()} for name, files in release_of(model).items()}
    assert ours == facts["release_files"]  # every key, shape and file of theirs, nothing more


@pytest.mark.parametrize("layers", [21, 53])
def test_the_authors_release_with_seeded_weights_gives_their_outputs(layers, tmp_path):
    facts = read_facts(f"rangenet_darknet{layers}.json")
    shapes = {f"{name}.{k}": shape for name, keys in facts["release_files"].items() for k, shape in keys.items()}
    state = seeded_state(shapes, seed=0)
    files = {
        name: {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")} for name in RELEASE_FILES
    }
    model = RangeNetPP(layers)
    extra = load_inference_weights(model, write_release(tmp_path / "release", files, layers))
    assert extra["release"] == "RangeNetPP.read_release_weights"
    model.eval()
    with torch.no_grad():
        probs = model({"image": seeded_input(facts["input"]["shape"], seed=facts["input"]["seed"])})[0].softmax(0)
    assert probs.argmax(0).flatten().tolist() == facts["argmax"]
    for (h, w), values in zip(facts["softmax_at"]["positions"], facts["softmax_at"]["values"]):
        assert probs[:, h, w].tolist() == pytest.approx(values, abs=2e-6)


def small(layers: int = 21, **kwargs) -> RangeNetPP:
    return RangeNetPP(layers, width=2, **kwargs)  # the authors' layers at 1/16 of their channels: fast


def test_a_release_of_darknet53_for_a_darknet21_model_names_what_does_not_fit(tmp_path):
    folder = write_release(tmp_path / "darknet53", release_of(small(53)), layers=53)
    with pytest.raises(ConfigError) as e:
        load_inference_weights(small(21), folder)
    message = str(e.value)
    assert "does not fit the model RangeNetPP" in message and "unexpected (backbone.enc2.residual_1." in message
    folder = write_release(tmp_path / "classes", release_of(small(21, num_classes=26)), layers=21, classes=26)
    with pytest.raises(ConfigError, match=r"head\.1\.weight: \(26, 2, 3, 3\) in the release, \(20, 2, 3, 3\)"):
        load_inference_weights(small(21), folder)


def test_a_release_whose_files_disagree_is_one_paragraph_naming_them(tmp_path):
    files = release_of(small(21))
    folder = write_release(tmp_path / "depth", files, layers=53)
    with pytest.raises(ConfigError, match=r"arch_cfg\.yaml says Darknet53, its 'backbone' holds .* Darknet21"):
        load_inference_weights(small(21), folder)
    folder = write_release(tmp_path / "classes", files, layers=21, classes=26)
    with pytest.raises(ConfigError, match=r"data_cfg\.yaml has 26 classes .*'segmentation_head' 20"):
        load_inference_weights(small(21), folder)
    folder = write_release(tmp_path / "partial", {"backbone": files["backbone"]}, layers=21)
    with pytest.raises(ConfigError, match=r"has no 'segmentation_decoder' \(it holds arch_cfg\.yaml, backbone, "):
        load_inference_weights(small(21), folder)
    folder = write_release(tmp_path / "squeeze", files, layers=21)
    arch_cfg = os.path.join(folder, "arch_cfg.yaml")
    with open(arch_cfg) as f:
        arch = yaml.safe_load(f)
    arch["backbone"]["name"] = "squeezeseg"
    with open(arch_cfg, "w") as f:
        yaml.safe_dump(arch, f)
    with pytest.raises(ConfigError, match=r"its backbone/decoder is 'squeezeseg'/'darknet'; lazytrain has Darknet"):
        load_inference_weights(small(21), folder)


def test_a_release_loads_from_one_of_its_files_and_fine_tunes_through_init_checkpoint(tmp_path):
    authors = small(21)
    folder = write_release(tmp_path / "darknet21", release_of(authors), layers=21)
    for path in (folder, os.path.join(folder, "segmentation_head")):
        model = small(21)
        load_inference_weights(model, path)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), authors.state_dict().values()))
    report = load_init_weights(small(21), folder, strict=True)
    assert len(report["loaded"]) == len(authors.state_dict())


def test_a_file_of_another_format_names_the_release_folder_among_the_formats_accepted(tmp_path):
    path = tmp_path / "SalsaNext"
    torch.save({"state_dict": {"module.x": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(ConfigError) as e:
        load_inference_weights(small(21), str(path))
    assert "top-level keys 'state_dict', 'epoch'" in str(e.value)
    assert "RangeNetPP.read_release_weights reads: RangeNet++'s release folder (lidar-bonnetal" in str(e.value)


def test_the_class_weights_are_computed_at_the_first_step_and_are_no_key_of_the_state_dict():
    calls = []

    def weights():
        calls.append(1)
        return [0.0] + [1.0] * 19

    model = small(21, class_weights=weights)
    assert "class_weights" not in model.state_dict() and calls == []
    batch = {"image": torch.randn(2, 5, 4, 64), "label_image": torch.randint(0, 20, (2, 4, 64))}
    model.eval()
    assert model(batch).shape == (2, 20, 4, 64) and calls == []
    model.train()
    loss = model(batch)["loss_ce"]
    loss.backward()
    assert torch.isfinite(loss) and calls == [1] and model.class_weights.tolist() == [0.0] + [1.0] * 19
    model(batch)
    assert calls == [1]
    with pytest.raises(ValueError, match="divisible by the output stride 32"):
        model({"image": torch.randn(1, 5, 4, 48)})


@pytest.mark.parametrize(("config", "lr", "decay", "batch"), [("kitti_rangenet21.py", 0.01, 0.995, 2),
                                                            ("kitti_rangenet53.py", 0.005, 0.99, 8)])  # fmt: skip
def test_the_rangenet_configs_hold_the_authors_schedule(config, lr, decay, batch):
    cfg = load_config(REPO / "configs" / config)
    per_epoch = 19130 // batch
    assert cfg.train.max_iter == 150 * per_epoch and cfg.dataloader.train.batch_size == batch
    assert cfg.optimizer.lr == lr and cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.dataset.projection.width == 2048 and cfg.model.bn_momentum == 0.01 and cfg.model.dropout == 0.01
    multiplier = instantiate(cfg.lr_multiplier)
    at_epoch = lambda epoch: multiplier(epoch / 150)  # noqa: E731
    assert at_epoch(0) == 0.0 and at_epoch(0.5) == pytest.approx(0.5) and at_epoch(1) == pytest.approx(1.0)
    assert at_epoch(11) == pytest.approx(decay**10) and at_epoch(150) == pytest.approx(decay**149)


def test_the_rangenet_config_trains_evaluates_and_exports_in_a_dry_run_on_the_cpu(tmp_path):
    config = "kitti_rangenet21.py"  # kitti_rangenet53.py is the same network deeper: its dry run takes as long
    cmd = [sys.executable, "-m", "lazytrain.cli", "train", str(REPO / "configs" / config), "--dry-run",
           f"dataset.root={tmp_path / 'data'}", "dataset.synthetic_scans=1", "dataset.projection.height=16",
           "dataset.projection.width=128", "model.width=2", "dataloader.train.dataset.sequences=['00']",
           "dataloader.test.dataset.sequences=['08']", f"model.class_weights.cache_dir={tmp_path / 'cache'}",
           "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
           f"--output-dir={tmp_path / 'out'}"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout[-3000:]
    assert "dry run passed" in r.stdout and "export check (onnxruntime)" in r.stdout
