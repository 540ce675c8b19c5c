"""SalsaNext and CENet equal the authors' networks: parameter counts, state-dict keys and shapes, outputs and
losses for seeded weights on a seeded input, all against facts recorded once from the authors' code
(tools/record_release_facts.py, tests/data/*_facts.json); their release files load as they are."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from conftest import REPO
from seeded_networks import PROBE_PIXELS, argmax_text, seeded_input, seeded_weights

from lazytrain.config import ConfigError
from lazytrain.lidar.cenet import CENet
from lazytrain.lidar.losses import (
    AuxiliaryHeadLosses,
    BoundaryLoss,
    LossTerms,
    LovaszSoftmaxLoss,
    WeightedNLLLoss,
)
from lazytrain.lidar.salsanext import SalsaNext

DATA = REPO / "tests" / "data"
FACTS = {name: json.loads((DATA / f"{name}_facts.json").read_text()) for name in ("salsanext", "cenet")}
MODELS = {"salsanext": SalsaNext, "cenet": CENet}
RELEASE_FILE = {"salsanext": "SalsaNext", "cenet": "SENet_valid_best"}


def authors_state(name: str) -> dict[str, torch.Tensor]:
    """The authors' state dict (their key names, DataParallel's module. for SalsaNext) with the recorded seeded
    weights."""
    facts = FACTS[name]
    zeros = {k: torch.zeros(shape, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float)
             for k, shape in facts["state_dict"]}  # fmt: skip
    return seeded_weights(zeros, facts["seed"])


def own_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def write_release(name: str, folder, state=None) -> str:
    """A release as the authors' training script saves it, in a folder as their infer script reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RELEASE_FILE[name]
    state = authors_state(name) if state is None else state
    torch.save({"epoch": 7, "state_dict": state, "optimizer": {}, "info": {"best_val_iou": 0.5}}, path)
    return str(path)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_counts_keys_and_shapes_equal_the_authors(name):
    model = MODELS[name]()
    own = sum(p.numel() for p in model.parameters())
    print(f"{name}: {own} parameters (authors' {FACTS[name]['parameters']})")
    assert own == FACTS[name]["parameters"]
    authors = [[k.removeprefix("module."), shape] for k, shape in FACTS[name]["state_dict"]]
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == authors


def test_the_paper_parameter_counts():
    assert round(sum(p.numel() for p in SalsaNext().parameters()) / 1e6, 1) == 6.7
    assert round(sum(p.numel() for p in CENet().parameters()) / 1e6, 1) == 6.8


@pytest.mark.parametrize("name", MODELS)
def test_a_release_in_the_authors_format_gives_the_authors_outputs(name, tmp_path):
    write_release(name, tmp_path / "release")
    state = MODELS[name].read_release_weights(str(tmp_path / "release"))  # the folder, as their infer reads it
    assert state is not None
    model = MODELS[name]()
    model.load_state_dict(state, strict=True)
    model.eval()
    facts = FACTS[name]
    image, _ = seeded_input(facts["input_seed"])
    with torch.no_grad():
        scores = model({"image": image})
    probs = torch.softmax(scores, dim=1)
    assert scores.shape == (1, 20, 64, 64)
    for (c, h, w, value), pixel in zip(facts["probes"], PROBE_PIXELS):
        assert (c, h, w) == pixel and float(probs[0, c, h, w]) == pytest.approx(value, rel=1e-4, abs=1e-7)
    ours = argmax_text(probs)
    assert sum(a == b for a, b in zip(ours, facts["argmax"])) / len(ours) >= 0.999


def test_salsanext_losses_equal_the_authors_nll_and_lovasz():
    model = SalsaNext()
    model.load_state_dict(own_keys(authors_state("salsanext")))
    facts = FACTS["salsanext"]
    image, labels = seeded_input(facts["input_seed"])
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model({"image": image}), dim=1)
    loss = LossTerms({"nll": WeightedNLLLoss(facts["loss_weights"]), "lovasz": LovaszSoftmaxLoss()})(probs, labels)
    assert float(loss["loss_nll"]) == pytest.approx(facts["loss"]["nll"], rel=1e-4)
    assert float(loss["loss_lovasz"]) == pytest.approx(facts["loss"]["lovasz"], rel=1e-4)


def test_cenet_losses_over_the_main_and_auxiliary_heads_equal_the_authors():
    model = CENet()
    model.load_state_dict(own_keys(authors_state("cenet")))
    facts = FACTS["cenet"]
    image, labels = seeded_input(facts["input_seed"])
    model.eval()
    with torch.no_grad():
        heads = [torch.softmax(s, dim=1) for s in model.head_scores(image, auxiliary=True)]
    for head, recorded in zip(heads[1:], facts["aux_probes"]):
        for c, h, w, value in recorded:
            assert float(head[0, c, h, w]) == pytest.approx(value, rel=1e-4, abs=1e-7)
    terms = LossTerms(
        {"nll": WeightedNLLLoss(facts["loss_weights"]), "lovasz": LovaszSoftmaxLoss(), "boundary": BoundaryLoss()},
        weights={"lovasz": 1.5},
    )
    losses = AuxiliaryHeadLosses(terms, aux_weight=1.0)(heads, labels)
    assert len(losses) == 12
    assert float(sum(losses.values())) == pytest.approx(facts["loss"]["total"], rel=1e-4)
    assert float(losses["loss_boundary"]) == pytest.approx(facts["loss"]["boundary_per_head"][0], rel=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_train_mode_returns_the_papers_loss_terms_and_eval_mode_the_main_scores(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    # batch 2 at 64 x 64: SalsaNext's innermost BatchNorm sees 2 x 2 pixels (one 1 x 1 value cannot train)
    batch = {"image": torch.randn(2, 5, 64, 64), "label_image": torch.randint(0, 20, (2, 64, 64))}
    losses = model(batch)
    expected = {"salsanext": ["loss_lovasz", "loss_nll"],
                "cenet": sorted(f"loss_{h}{t}" for h in ("", "aux1_", "aux2_", "aux3_")
                                for t in ("nll", "lovasz", "boundary"))}  # fmt: skip
    assert sorted(losses) == expected[name]
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(batch).shape == (2, 20, 64, 64)


def test_salsanext_refuses_an_image_it_cannot_halve_four_times():
    with pytest.raises(ValueError, match="divisible by 16, not 64 x 40"):
        SalsaNext().eval()({"image": torch.zeros(1, 5, 64, 40)})


@pytest.mark.parametrize("name", MODELS)
def test_a_data_parallel_prefix_or_none_reads_the_same(name, tmp_path):
    state = authors_state(name)
    plain = own_keys(state)
    prefixed = {f"module.{k}": v for k, v in plain.items()}
    a = MODELS[name].read_release_weights(write_release(name, tmp_path / "a", plain))
    b = MODELS[name].read_release_weights(write_release(name, tmp_path / "b", prefixed))
    assert a is not None and b is not None and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", MODELS)
def test_files_of_other_formats_are_not_read_as_the_authors_release(name, tmp_path):
    other = "cenet" if name == "salsanext" else "salsanext"
    reader = MODELS[name].read_release_weights
    assert reader(write_release(other, tmp_path / "other")) is None  # the other model's release
    torch.save({"model": MODELS[name]().state_dict(), "iteration": 3}, tmp_path / "ours.pth")
    assert reader(str(tmp_path / "ours.pth")) is None  # lazytrain's own checkpoint
    (tmp_path / "empty").mkdir()
    assert reader(str(tmp_path / "empty")) is None
    assert reader(str(tmp_path / "no such file")) is None


@pytest.mark.parametrize("name", MODELS)
def test_a_release_whose_weights_do_not_fit_is_one_paragraph_naming_the_file(name, tmp_path):
    state = authors_state(name)
    dropped = sorted(state)[5]
    del state[dropped]
    path = write_release(name, tmp_path / "broken", state)
    with pytest.raises(ConfigError) as info:
        MODELS[name].read_release_weights(path)
    message = str(info.value)
    assert path in message and "missing" in message and dropped.removeprefix("module.") in message
    assert "\n" not in message


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("loader", ["load_inference_weights", "load_init_weights"])
def test_the_authors_release_loads_through_weights_and_init_checkpoint(name, loader, tmp_path):
    """--weights (eval, predict, export, analyze) and train.init_checkpoint read the authors' file as it is."""
    from lazytrain import checkpoint

    path = write_release(name, tmp_path / "release")
    model = MODELS[name]()
    getattr(checkpoint, loader)(model, path)
    expected = own_keys(authors_state(name))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


SMALL = ["dataset.projection.height=16", "dataset.projection.width=32", "dataset.synthetic_scans=1",
         "dataloader.train.dataset.sequences=['00']", "dataloader.test.dataset.sequences=['08']",
         "dataloader.train.batch_size=2", "dataloader.test.batch_size=2", "dataloader.train.num_workers=0",
         "dataloader.test.num_workers=0"]  # fmt: skip


@pytest.mark.parametrize("config", ["kitti_salsanext.py", "kitti_cenet.py"])
def test_each_paper_config_passes_the_dry_run_on_the_cpu(config, tmp_path):
    """Builds, trains 2 iterations, evaluates (with the paper's KNN), round-trips a checkpoint and exports with
    the onnxruntime check, at a small size."""
    import subprocess
    import sys

    from conftest import cli_env

    cmd = [sys.executable, "-m", "lazytrain.cli", "train", str(REPO / "configs" / config), "--dry-run",
           f"dataset.root={tmp_path / 'data'}", f"model.loss.{'' if config == 'kitti_salsanext.py' else 'losses.'}"
           f"terms.nll.class_weights.cache_dir={tmp_path / 'cache'}", *SMALL]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "train 2 steps" in r.stdout and "export check (onnxruntime)" in r.stdout
    assert "dry run passed" in r.stdout


def test_the_cenet_stages_go_512_1024_2048_each_from_the_last_ones_best_weights():
    from conftest import load_config
    from omegaconf import OmegaConf

    from lazytrain.config import instantiate

    stages = [load_config(REPO / "configs" / f"kitti_cenet{s}.py") for s in ("", "_1024", "_2048")]
    assert [c.dataset.projection.width for c in stages] == [512, 1024, 2048]
    assert [c.train.max_iter for c in stages] == [100 * 3188, 30 * 3188, 30 * 3188]
    assert stages[0].train.init_checkpoint == ""
    for before, after in itertools.pairwise(stages):
        assert after.train.init_checkpoint == f"{before.train.output_dir}/checkpoints/model_best.pth"
    for cfg in stages:
        assert OmegaConf.to_container(cfg.evaluator.knn) == {"knn": 7, "search": 7, "sigma": 1.0, "cutoff": 2.0}
        assert list(cfg.dataloader.test.dataset.means) == [11.71279, -0.1023471, 0.4952, -1.0545, 0.2877]
    # the authors' CosineAnnealingWarmUpRestarts: 0.0001 -> 0.01 over 1 epoch, cosine to 0.0001 per cycle
    first, later = instantiate(stages[0].lr_multiplier), instantiate(stages[1].lr_multiplier)
    assert first(0.0) == pytest.approx(0.01) and first(0.01) == pytest.approx(1.0)
    assert first(0.5 - 1e-9) == pytest.approx(0.01, abs=1e-6) and first(0.51) == pytest.approx(1.0)
    assert later(1 / 30) == pytest.approx(1.0) and later(1.0 - 1e-9) == pytest.approx(0.01, abs=1e-6)
