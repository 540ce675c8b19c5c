"""Settings mmengine and Lightning users reach for: best checkpoint, EMA of the weights, fine-tuning from
other weights (rename, strict, report), freezing."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import TOY, load_config

from lazytrain.checkpoint import load_inference_weights, read_checkpoint
from lazytrain.config import ConfigError, L
from lazytrain.engine import HookBase, build_hooks, build_trainer, train_main
from lazytrain.events import get_event_storage

SCORES = {4: 0.5, 9: 0.7, 14: 0.6, 19: 0.9, 24: 0.8, 29: 0.3}  # evaluation results by iteration


class ScriptedEvaluator:
    """Returns the score SCORES gives for the iteration being evaluated."""

    def reset(self) -> None:
        pass

    def process(self, batch, outputs) -> None:
        pass

    def evaluate(self) -> dict:
        return {"score": SCORES[get_event_storage().iter], "other": 1.0}


class CrashAt(HookBase):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter == self.iteration:
            raise KeyboardInterrupt("simulated crash")


def best_config(toy_config, *overrides):
    cfg = toy_config("train.max_iter=30", "train.eval_period=5", "train.checkpoint_period=5", "train.keep_last=1",
                     "train.best.metric=score", *overrides)  # fmt: skip
    cfg.evaluator = L(ScriptedEvaluator)()
    return cfg


def test_best_checkpoint_is_written_when_the_metric_improves_and_survives_resume(toy_config, tmp_path):
    cfg = best_config(toy_config)
    cfg.hooks.append(L(CrashAt)(iteration=22))
    with pytest.raises(KeyboardInterrupt):
        train_main(cfg)
    folder = tmp_path / "out" / "checkpoints"
    assert json.loads((folder / "model_best.json").read_text())["value"] == 0.9
    train_main(best_config(toy_config), resume=True)  # evaluates 0.8 (better than 0.7, worse than 19's 0.9), 0.3
    best = json.loads((folder / "model_best.json").read_text())
    assert best == {"metric": "score", "mode": "max", "value": 0.9, "iteration": 20}
    assert read_checkpoint(str(folder / "model_best.pth"))["iteration"] == 19  # the stored 0-based index
    assert (folder / "last_checkpoint").read_text() == "model_final.pth"  # model_best never becomes the last
    assert sorted(p.name for p in folder.glob("*.pth")) == ["model_0000025.pth", "model_best.pth", "model_final.pth"]
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "New best score = 0.9000 at iteration 20 (was 0.7000 at iteration 10): wrote model_best.pth" in log


def test_best_with_mode_min_keeps_the_lowest(toy_config, tmp_path):
    train_main(best_config(toy_config, "train.best.mode=min"))
    best = json.loads((tmp_path / "out" / "checkpoints" / "model_best.json").read_text())
    assert (best["value"], best["iteration"]) == (0.3, 30)


def test_best_metric_the_evaluator_does_not_return_lists_the_names_it_did(toy_config):
    with pytest.raises(ConfigError) as info:
        train_main(best_config(toy_config, "train.best.metric=scor"))
    assert str(info.value) == (
        "train.best.metric: the evaluation returned no metric 'scor'; it returned 'score', 'other'. "
        "Did you mean 'score'?"
    )


def test_the_hook_list_shows_ema_and_best(toy_config):
    names = [repr(h) for h in build_hooks(toy_config("train.ema.enabled=True", "train.best.metric=accuracy"))]
    assert names[2] == "EMAHook(decay=0.9998)"
    assert "BestCheckpointer(metric='accuracy', mode='max': checkpoints/model_best.pth)" in names


@pytest.mark.parametrize(
    ("hooks", "where"),
    [
        (["BestCheckpointer"], "and there is none"),
        (["BestCheckpointer", "EvalHook"], "after it"),
    ],
)
def test_a_best_checkpointer_without_an_evaluation_before_it_is_an_error_naming_the_hook(toy_config, hooks, where):
    from lazytrain.engine import BestCheckpointer, EvalHook

    made = {"BestCheckpointer": L(BestCheckpointer)(metric="score"), "EvalHook": L(EvalHook)(period=5)}
    cfg = toy_config("train.hooks_replace=True")
    cfg.hooks = [made[name] for name in hooks]
    with pytest.raises(ConfigError) as info:
        build_hooks(cfg)
    assert str(info.value).startswith(
        f"hooks.0: BestCheckpointer reads what EvalHook sets, so it must come after EvalHook in the hook list, but "
        f"it is at position 0 {where}"
    )
    cfg.hooks = [made["EvalHook"], made["BestCheckpointer"]]
    assert [type(h).__name__ for h in build_hooks(cfg)] == ["EvalHook", "BestCheckpointer"]


def test_ema_is_evaluated_saved_and_used_by_eval_unless_no_ema(toy_config, tmp_path):
    cfg = toy_config("train.max_iter=20", "train.ema.enabled=True", "train.ema.decay=0.8")
    trainer = build_trainer(cfg)
    trainer.train(0, 20)
    raw = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    averaged = dict(trainer.ema.module.state_dict())
    assert not torch.equal(raw["net.0.weight"], averaged["net.0.weight"])
    assert trainer.eval_model() is trainer.ema.module
    path = str(tmp_path / "out" / "checkpoints" / "model_final.pth")
    model = build_trainer(cfg).model
    assert load_inference_weights(model, path)["weights"] == "ema"
    assert torch.equal(model.state_dict()["net.0.weight"], averaged["net.0.weight"])
    assert load_inference_weights(model, path, use_ema=False)["weights"] == "model"
    assert torch.equal(model.state_dict()["net.0.weight"], raw["net.0.weight"])


def test_resume_with_ema_continues_the_same_average_bit_for_bit(toy_config, tmp_path):
    common = ["train.max_iter=16", "train.checkpoint_period=8", "train.deterministic=True", "train.ema.enabled=True",
              "train.ema.decay=0.7", "train.eval_period=0"]  # fmt: skip
    full = load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'full'}", *common)
    train_main(full)
    parts = load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'parts'}", *common)
    parts.hooks.append(L(CrashAt)(iteration=10))
    with pytest.raises(KeyboardInterrupt):
        train_main(parts)
    train_main(load_config(TOY / "configs/toy.py", f"train.output_dir={tmp_path / 'parts'}", *common), resume=True)
    a = read_checkpoint(str(tmp_path / "full" / "checkpoints" / "model_final.pth"))["ema"]
    b = read_checkpoint(str(tmp_path / "parts" / "checkpoints" / "model_final.pth"))["ema"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_freeze_keeps_matching_parameters_out_of_training(toy_config):
    cfg = toy_config("train.max_iter=5", "train.freeze=['net.0.*']")
    trainer = build_trainer(cfg)
    before = trainer.model.net[0].weight.detach().clone()
    trainer.train(0, 5)
    assert torch.equal(trainer.model.net[0].weight, before)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(trainer.model.net[0].weight) not in optimized and id(trainer.model.net[3].weight) in optimized


def test_freeze_pattern_that_matches_nothing_suggests_names(toy_config):
    with pytest.raises(ConfigError) as info:
        build_trainer(toy_config("train.freeze=['nett.0.*']"))
    assert str(info.value).startswith("train.freeze.0: the pattern 'nett.0.*' matches no parameter of MLPClassifier.")
    assert "Did you mean 'net.0'?" in str(info.value)


def test_the_start_of_the_log_shows_trainable_and_frozen_counts(toy_config, tmp_path):
    train_main(toy_config("train.max_iter=2", "train.freeze=['net.0.*']"))
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Model MLPClassifier: 420 parameters (132 trainable, 288 frozen)" in log


def save_renamed(tmp_path, prefix: str, **extra_tensors) -> str:
    model = load_config(TOY / "configs/toy.py").model
    from lazytrain.config import instantiate

    state = {prefix + k[len("net.") :]: v for k, v in instantiate(model).state_dict().items()}
    state.update(extra_tensors)
    path = str(tmp_path / "other.pth")
    torch.save({"model": state}, path)
    return path


def test_init_rename_maps_keys_before_loading_and_reports_a_table(toy_config, tmp_path):
    path = save_renamed(tmp_path, "backbone.")
    train_main(toy_config("train.max_iter=1", f"train.init_checkpoint={path}",
                          "train.init_rename=[['^backbone\\\\.', 'net.']]"))  # fmt: skip
    log = (tmp_path / "out" / "log.txt").read_text()
    assert f"Loaded 4 of 4 model tensors from {path}:" in log
    assert "  missing        0" in log and "  unexpected     0" in log


def test_init_strict_makes_a_mismatch_an_error_naming_the_keys(toy_config, tmp_path):
    path = save_renamed(tmp_path, "net.", **{"head.extra": torch.zeros(3)})
    with pytest.raises(ConfigError) as info:
        train_main(toy_config("train.max_iter=1", f"train.init_checkpoint={path}", "train.init_strict=True"))
    assert str(info.value).startswith(f"train.init_checkpoint: '{path}' does not match the model exactly (unexpected: ")
    assert "head.extra" in str(info.value)


def test_a_checkpoint_of_another_architecture_is_one_paragraph(toy_config, tmp_path):
    path = save_renamed(tmp_path, "encoder.layers.")
    with pytest.raises(ConfigError) as info:
        train_main(toy_config("train.max_iter=1", f"train.init_checkpoint={path}"))
    message = str(info.value)
    assert "shares no weights with the model: its keys look like encoder.layers.0.bias" in message
    assert "train.init_rename" in message and "\n" not in message


def test_compiled_training_writes_the_same_checkpoint_keys_and_resumes_across_the_switch(toy_config, tmp_path):
    plain = toy_config("train.max_iter=4", "train.checkpoint_period=2", "train.eval_period=0")
    train_main(plain)
    keys = read_checkpoint(str(tmp_path / "out" / "checkpoints" / "model_final.pth"))["model"].keys()
    compiled = toy_config("train.max_iter=8", "train.checkpoint_period=2", "train.eval_period=0",
                          "train.compile.enabled=True", "train.compile.backend=aot_eager")  # fmt: skip
    trainer = build_trainer(compiled)
    assert type(trainer.model).__name__ == "OptimizedModule"
    results = train_main(compiled, resume=True)  # a checkpoint of the plain model resumes compiled
    assert results["total_loss"][1] == 8  # after 8 iterations
    saved = read_checkpoint(str(tmp_path / "out" / "checkpoints" / "model_final.pth"))
    assert saved["model"].keys() == keys and not any("_orig_mod" in k for k in saved["model"])
    assert saved["iteration"] == 7


def test_profiler_hook_writes_a_trace_and_logs_the_top_operators(toy_config, tmp_path):
    cfg = toy_config("train.max_iter=5", "train.profile.enabled=True", "train.profile.start_iter=1",
                     "train.profile.num_iters=2")  # fmt: skip
    assert "ProfilerHook(iterations 2-3" in repr(build_hooks(cfg))  # after the first one
    train_main(cfg)
    trace = tmp_path / "out" / "profile" / "rank0.iter2-3.pt.trace.json"
    assert "traceEvents" in json.loads(trace.read_text())
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Top operators by self time" in log and "aten::addmm" in log


def test_init_checkpoint_loads_weights_only_and_reports_key_mismatch(toy_config, tmp_path):
    first = train_main(toy_config("train.max_iter=30"))
    weights = tmp_path / "out" / "checkpoints" / "model_final.pth"

    same = load_config(
        TOY / "configs/toy.py",
        f"train.output_dir={tmp_path / 'same'}",
        "train.max_iter=30",
        f"train.init_checkpoint={weights}",
        "train.log_period=1",
    )
    assert train_main(same, eval_only=True)["accuracy"] == first["accuracy"][0]  # the weights were loaded
    train_main(same)
    rows = [json.loads(line) for line in (tmp_path / "same" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["iteration"] == 1  # weights only: training starts over

    other = load_config(
        TOY / "configs/toy.py",
        f"train.output_dir={tmp_path / 'other'}",
        "train.max_iter=1",
        f"train.init_checkpoint={weights}",
        "model.hidden=16",
    )
    train_main(other)
    log = (tmp_path / "other" / "log.txt").read_text()
    assert "net.0.weight" in log and "(16, 8)" in log  # the shape mismatch is reported, by key


def test_compiling_is_announced_and_timed_before_the_first_step_ends(toy_config, log_lines):
    from lazytrain.engine import train_main

    train_main(toy_config("train.max_iter=1", "train.eval_period=0", "train.compile.enabled=True",
                          "train.compile.backend=aot_eager"))  # fmt: skip
    said = [line for line in log_lines if line.startswith("INFO lazytrain.engine.build: Compil")]
    assert said[0].endswith("Compiling the model with torch.compile (mode=None, backend='aot_eager'): the first "
                            "step waits for it.")  # fmt: skip
    assert re.search(r"Compiled: the first forward pass took [\d.]+ s, compiling included\.$", said[1])
    assert len(said) == 2  # once per run, not per step
