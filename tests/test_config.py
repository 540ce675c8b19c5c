"""LazyCall / instantiate / LazyConfig: what a user writing and overriding configs sees."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from lazytrain.config import ConfigError, L, LazyConfig, config_dict, instantiate
from lazytrain.config.lazy import TUPLE_CONFIG
from lazytrain.config.provenance import key_line


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


BASE = """
    import torch
    from lazytrain.config import L

    num_classes = 5
    model = L(torch.nn.Linear)(8, "${num_classes}")
    optimizer = L(torch.optim.SGD)(lr=0.1)
    train = dict(max_iter=10, amp=dict(enabled=False, dtype="bf16"))
"""


def test_lazycall_records_a_call_and_instantiate_makes_it():
    cfg = L(torch.nn.Linear)(3, out_features=2)
    assert isinstance(cfg, DictConfig)
    assert cfg.in_features == 3  # positional argument bound to its name
    layer = instantiate(cfg)
    assert isinstance(layer, torch.nn.Linear) and layer.out_features == 2


def test_instantiate_nested_lists_and_dicts():
    cfg = as_config(
        dict(
            layers=[L(torch.nn.Linear)(2, 3), dict(act=L(torch.nn.ReLU)(), n=[1, L(torch.nn.Identity)()])],
            plain=dict(a=1),
        )
    )
    built = instantiate(cfg)
    assert isinstance(built["layers"][0], torch.nn.Linear)
    assert isinstance(built["layers"][1]["act"], torch.nn.ReLU)
    assert built["layers"][1]["n"][0] == 1 and isinstance(built["layers"][1]["n"][1], torch.nn.Identity)
    assert built["plain"] == {"a": 1}


def as_config(d: dict) -> DictConfig:
    """What a loaded config looks like: one DictConfig root that may hold objects."""
    return OmegaConf.create(d, flags={"allow_objects": True})


def test_load_collects_config_values_not_imports(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    assert set(cfg.keys()) == {"num_classes", "model", "optimizer", "train"}
    assert cfg.train.amp.dtype == "bf16"


def test_interpolation_has_one_source(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    LazyConfig.apply_overrides(cfg, ["num_classes=20"])
    assert cfg.model.out_features == 20
    assert instantiate(cfg.model).out_features == 20


def test_relative_imports_three_levels_deep(tmp_path):
    write(tmp_path, "base.py", BASE)
    write(
        tmp_path,
        "common/data.py",
        """
        from ..base import num_classes
        dataset = dict(num_classes=num_classes, root="data")
        """,
    )
    write(
        tmp_path,
        "common/models/deep.py",
        """
        from ...base import model, train
        from ..data import dataset
        train.max_iter = 3
        model.out_features = "${dataset.num_classes}"
        """,
    )
    top = write(
        tmp_path,
        "exps/a/b/top.py",
        """
        from ....common.models.deep import model, train, dataset
        from ....base import optimizer
        from .... import common
        train.max_iter *= 2
        """,
    )
    cfg = LazyConfig.load(top)
    assert cfg.train.max_iter == 6  # loaded values are DictConfigs: attribute access works
    assert cfg.model.out_features == 5
    assert cfg.optimizer.lr == 0.1
    assert "common" not in cfg  # a module is not part of a config


def test_overrides_parse_literals_and_accept_target_arguments(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    LazyConfig.apply_overrides(
        cfg,
        ["optimizer.lr=1e-3", "train.amp.enabled=true", "optimizer.momentum=0.9", "+train.note=hello world"],
    )
    assert cfg.optimizer.lr == 1e-3 and cfg.train.amp.enabled is True
    assert cfg.optimizer.momentum == 0.9  # SGD takes momentum, though the config did not set it
    assert cfg.train.note == "hello world"


def test_save_then_load_gives_equal_config_that_builds_the_same(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    LazyConfig.apply_overrides(cfg, ["train.max_iter=7"])
    out = tmp_path / "saved.yaml"
    LazyConfig.save(cfg, out)
    assert "_target_: torch.nn.Linear" in out.read_text()
    assert "${num_classes}" in out.read_text()  # interpolations survive a save
    loaded = LazyConfig.load(out)
    assert loaded == cfg
    a, b = instantiate(cfg.model), instantiate(loaded.model)
    assert type(a) is type(b) and a.weight.shape == b.weight.shape


def test_importable_function_value_is_saved_as_an_import_reference(tmp_path, recwarn):
    cfg = as_config({"loader": dict(collate_fn=torch.utils.data.default_collate, n=1)})
    out = tmp_path / "cfg.yaml"
    LazyConfig.save(cfg, out)
    assert "collate_fn: !import 'torch.utils.data.default_collate'" in out.read_text()
    assert not (tmp_path / "cfg.pkl").exists() and not [w for w in recwarn if "cloudpickle" in str(w.message)]
    assert LazyConfig.load(out) == cfg


def test_value_yaml_cannot_hold_is_pickled_beside_with_a_warning(tmp_path):
    cfg = as_config({"fn": L(torch.nn.Sequential)(), "scale": dict(f=lambda x: x * 3)})
    out = tmp_path / "cfg.yaml"
    with pytest.warns(UserWarning, match=r"'scale\.f'.*cloudpickle"):
        LazyConfig.save(cfg, out)
    assert (tmp_path / "cfg.pkl").exists()
    loaded = LazyConfig.load(out)
    assert loaded.scale.f(2) == 6


def test_a_model_object_in_the_config_is_named_by_key_and_type_not_by_its_repr(tmp_path):
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(20)])
    cfg = as_config({"model": L(torch.nn.Sequential)(), "backbone": model})
    with pytest.warns(UserWarning) as warned:
        LazyConfig.save(cfg, tmp_path / "cfg.yaml")
    [message] = [str(w.message) for w in warned if "cloudpickle" in str(w.message)]
    assert message.startswith("config key 'backbone' holds a torch.nn.modules.container.Sequential object, which YAML")
    assert "\n" not in message and "Linear" not in message


def test_lambda_target_round_trips_through_side_file(tmp_path):
    def make(x):
        return {"made": x}

    cfg = as_config({"thing": L(make)(x=4)})
    with pytest.warns(UserWarning, match="thing._target_"):
        LazyConfig.save(cfg, tmp_path / "c.yaml")
    assert instantiate(LazyConfig.load(tmp_path / "c.yaml").thing) == {"made": 4}


# ---------------------------------------------------------------- errors users see


def error_of(fn, *args) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    text = str(info.value)
    assert "\n" not in text.strip(), "an error is one paragraph"
    return info.value


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.py", "x = 1\ny = dict(a=1,\nz = 3 3\n")
    e = error_of(LazyConfig.load, path)
    assert "bad.py:" in str(e) and "syntax error" in str(e)
    assert e.line in (2, 3)


def test_missing_module_names_file_line_and_module(tmp_path):
    path = write(tmp_path, "exp.py", "import os\nfrom not_a_real_pkg.models import Net\n")
    e = error_of(LazyConfig.load, path)
    assert "exp.py:2" in str(e) and "not_a_real_pkg" in str(e) and "PYTHONPATH" in str(e)


def test_misspelled_import_name_suggests(tmp_path):
    path = write(tmp_path, "exp.py", "from lazytrain.config import LazyCal\n")
    e = error_of(LazyConfig.load, path)
    assert "exp.py:1" in str(e) and "'LazyCall'" in str(e)


def test_missing_relative_config_import(tmp_path):
    path = write(tmp_path, "exp.py", "x = 1\nfrom .common.nothere import model\n")
    e = error_of(LazyConfig.load, path)
    assert "exp.py:2" in str(e) and "nothere.py" in str(e)


def test_import_of_undefined_name_from_config_suggests(tmp_path):
    write(tmp_path, "base.py", BASE)
    path = write(tmp_path, "exp.py", "from .base import optimiser\n")
    e = error_of(LazyConfig.load, path)
    assert "exp.py:1" in str(e) and "Did you mean 'optimizer'" in str(e)


def test_import_cycle_names_the_cycle(tmp_path):
    write(tmp_path, "a.py", "from .b import y\nx = 1\n")
    write(tmp_path, "b.py", "from .c import z\ny = 2\n")
    write(tmp_path, "c.py", "from .a import x\nz = 3\n")
    e = error_of(LazyConfig.load, tmp_path / "a.py")
    assert "a.py -> " in str(e) and "b.py -> " in str(e) and "c.py -> " in str(e)
    assert str(e).count("a.py") >= 2


@pytest.mark.parametrize(
    ("files", "names"),
    [
        ({"exp.py": "x = 1\nimport not_a_real_pkg\n"}, "not_a_real_pkg"),  # a missing module
        ({"exp.py": "from lazytrain.config import LazyCal\n"}, "lazytrain.config"),  # a missing name
        ({"exp.py": "x = 1\nfrom .common.nothere import model\n"}, None),  # a missing config file
        ({"base.py": "y = 2\n", "exp.py": "from .base import x\n"}, None),  # a missing config value
        ({"exp.py": "from .base import y\nx = 1\n", "base.py": "from .exp import x\ny = 2\n"}, None),  # a cycle
    ],
)
def test_a_failed_config_import_is_an_import_error_with_the_one_paragraph_message(tmp_path, files, names):
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(ImportError) as info:  # as detectron2's loader: code that catches ImportError still does
        LazyConfig.load(tmp_path / "exp.py")
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 2
    assert str(info.value).startswith(f"{info.value.file}:{info.value.line}: ") and info.value.line
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    assert info.value.name == names  # ImportError's field: the module that did not import


def test_unknown_argument_names_file_line_key_and_suggests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path,
        "exp.py",
        "import torch\nfrom lazytrain.config import L\n\noptimizer = L(torch.optim.SGD)(lrr=0.1)\n",
    )
    e = error_of(LazyConfig.load, path)
    msg = str(e)
    assert msg.startswith("exp.py:4: optimizer: torch.optim.SGD() got an unexpected argument 'lrr'")
    assert "Did you mean 'lr'?" in msg


def test_unknown_argument_added_later_is_caught_before_the_call():
    cfg = L(torch.optim.SGD)(lr=0.1)
    cfg.lrr = 3
    e = error_of(instantiate, as_config({"optimizer": cfg}))
    assert "optimizer" in str(e) and "'lrr'" in str(e) and "Did you mean 'lr'" in str(e)


def test_exception_in_constructor_names_key_path_and_target():
    cfg = as_config({"model": dict(head=L(torch.nn.Linear)(in_features=-3, out_features=2))})
    e = error_of(instantiate, cfg)
    assert "model.head" in str(e) and "torch.nn.Linear" in str(e)


def test_bad_interpolation_names_key_reference_and_line(tmp_path):
    path = write(tmp_path, "exp.py", 'dataset = dict(num_classes=3)\nmodel = dict(n="${dataset.num_clases}")\n')
    e = error_of(LazyConfig.load, path)
    msg = str(e)
    assert "exp.py:2" in msg and "model.n" in msg and "'dataset.num_clases'" in msg
    assert "Did you mean 'dataset.num_classes'" in msg


def test_unknown_override_key_suggests_close_matches(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    e = error_of(LazyConfig.apply_overrides, cfg, ["train.max_iters=3"])
    assert "train.max_iters" in str(e) and "Did you mean 'train.max_iter'" in str(e)
    e = error_of(LazyConfig.apply_overrides, cfg, ["optimizer.lrr=3"])
    assert "'lrr'" in str(e) and "Did you mean 'lr'" in str(e)


def test_override_without_equals_is_an_error(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    e = error_of(LazyConfig.apply_overrides, cfg, ["train.max_iter"])
    assert "KEY=VALUE" in str(e)


def test_missing_config_file():
    e = error_of(LazyConfig.load, "no/such/config.py")
    assert "no/such/config.py" in str(e)


# ---------------------------------------------------------------- CLI and outside users


def run_cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_cli_config_prints_resolved_yaml_and_saves(tmp_path):
    path = write(tmp_path, "exp.py", BASE)
    out = tmp_path / "out.yaml"
    r = run_cli("config", str(path), "num_classes=9", "--save", str(out))
    assert r.returncode == 0, r.stderr
    assert "out_features: 9" in r.stdout
    assert LazyConfig.load(out).model.out_features == 9


def test_a_directory_given_as_the_config_is_named_a_directory(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    for name in ("b.py", "a.py", "__init__.py", "notes.txt"):
        (folder / name).write_text("")
    r = run_cli("train", str(folder), "train.max_iter=2")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"error: config file '{folder}' is a directory, not a config file. Give one of the 2 config files in it, "
        f"such as {folder / 'a.py'} or {folder / 'b.py'}."
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("config", str(empty))
    assert r.returncode == 2 and "is a directory" in r.stderr and r.stderr.count("\n") == 1


def test_cli_config_error_is_one_paragraph_with_exit_code_2(tmp_path):
    path = write(tmp_path, "exp.py", BASE)
    r = run_cli("config", str(path), "optimizer.lrr=1")
    assert r.returncode == 2
    assert r.stderr.startswith("error: optimizer.lrr:") and "Traceback" not in r.stderr
    r = run_cli("config", str(path), "optimizer.lrr=1", "--traceback")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_config_of_an_outside_project_with_its_own_package(tmp_path):
    write(
        tmp_path,
        "src/myproj/models.py",
        """
        import torch
        class TinyNet(torch.nn.Module):
            def __init__(self, width: int, depth: int = 1):
                super().__init__()
                self.body = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])
        """,
    )
    write(tmp_path, "src/myproj/__init__.py", "")
    write(
        tmp_path,
        "configs/exp.py",
        """
        from lazytrain.config import L
        from myproj.models import TinyNet
        model = L(TinyNet)(width=4, depth=2)
        """,
    )
    script = (
        "from lazytrain.config import LazyConfig, instantiate\n"
        "m = instantiate(LazyConfig.load('configs/exp.py').model)\n"
        "print(type(m).__name__, len(m.body))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "TinyNet 2"


def test_omegaconf_errors_are_one_paragraph_without_omegaconf_details():
    cfg = as_config({"r": "${bad:1}"})
    with pytest.raises(ConfigError) as info:
        instantiate(cfg)
    assert str(info.value) == "r: cannot resolve '${bad:1}': Unsupported interpolation type bad."
    with pytest.raises(ConfigError) as info:
        LazyConfig.check(cfg)
    assert str(info.value) == "r: bad interpolation '${bad:1}': Unsupported interpolation type bad."


def test_an_interpolation_of_a_required_value_not_set_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = 'import torch\nfrom lazytrain.config import L\ndim = "???"\n'
    body += 'model = L(torch.nn.Linear)(in_features="${dim}", out_features=2)\n'
    path = write(tmp_path, "exp.py", body)
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(path)
    assert str(info.value) == (
        "exp.py:4: model.in_features: '${dim}' needs 'dim', which is required but not set ('???'). "
        "Set it in the config or on the command line (dim=...)."
    )
    cfg = LazyConfig.load(path, check=False)
    LazyConfig.apply_overrides(cfg, ["dim=3"])
    LazyConfig.check(cfg)
    chained = write(
        tmp_path, "chain.py", body.replace('"${dim}"', '"${width}"') + "width = '${dims.in}'\ndims = dict(out=1)\n"
    )
    cfg = LazyConfig.load(chained, check=False)
    LazyConfig.apply_overrides(cfg, ["+dims.in=???"])
    with pytest.raises(ConfigError, match=r"needs 'dims.in', which is required but not set .*\(dims.in=...\)"):
        LazyConfig.check(cfg)


@pytest.mark.skipif(TUPLE_CONFIG is None, reason="omegaconf 2.3 stores the tuple as a list, which may hold '???'")
def test_a_missing_value_inside_a_call_is_a_one_paragraph_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(write(tmp_path, "exp.py", "import torch\nfrom lazytrain.config import L\n"
                              "m = L(torch.nn.Conv2d)(1, 2, kernel_size=(1, '???'))\n"))  # fmt: skip
    assert "\n" not in str(info.value) and str(info.value).startswith(str(tmp_path / "exp.py:3: m: "))


def test_messages_show_a_config_outside_the_working_directory_by_its_absolute_path(tmp_path, monkeypatch):
    # a clone at /tmp/x runs its tests with configs in /tmp/pytest-of-...: '../pytest-of-...' named them before
    text = "import torch\nfrom lazytrain.config import L\nm = L(torch.nn.Conv2d)(1, 2, kernel_size=(1, '???'))\n"
    path = write(tmp_path / "configs", "exp.py", text)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(str(path))
    assert str(info.value).startswith(f"{path}:3: m: ")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        LazyConfig.load("configs/exp.py")
    assert str(info.value).startswith(os.path.join("configs", "exp.py") + ":3: m: ")


def test_an_omegaconf_error_while_a_config_file_runs_is_one_paragraph(tmp_path):
    path = write(tmp_path, "exp.py", "from lazytrain.config import L\nmodel = L(dict)(a=1)\nmodel.head.width = 3\n")
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(path)
    assert str(info.value).endswith("exp.py:3: ConfigAttributeError: Missing key head")


def test_load_run_config_gives_the_config_the_command_line_runs_where_load_names_it(tmp_path):
    write(tmp_path, "common/data.py", "data = dict(seed='${train.seed}', size=4)\n")
    path = write(tmp_path, "exp.py", "from .common.data import data\ntrain = dict(max_iter=5)\n")
    e = error_of(LazyConfig.load, path)  # train's defaults (seed=0) belong to the engine, not to the loader
    assert "'train.seed' is not a key" in str(e) and "lazytrain.engine.load_run_config(path, overrides)" in str(e)
    from lazytrain.engine import load_run_config

    cfg = load_run_config(path, ["data.size=8"])
    assert (cfg.data.seed, cfg.data.size, cfg.train.log_period) == (0, 8, 20)
    r = subprocess.run(
        [sys.executable, "-m", "lazytrain.cli", "config", str(path), "data.size=8"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == LazyConfig.to_yaml(cfg, resolve=True)


def test_config_dict_loads_saves_and_locates_as_a_dict_does(tmp_path):
    common = "from lazytrain.config import config_dict\n\ntrain = {}(\n    max_iter=10,\n    amp=dict(enabled=0),\n)\n"
    exp = "from .common.train import train\n\ntrain.max_iter = 300\ntrain.amp.enabled = True\n"
    seen = []
    for kind in ("dict", "config_dict"):
        write(tmp_path / kind, "common/train.py", common.format(kind))
        path = write(tmp_path / kind, "exp.py", exp)
        cfg = LazyConfig.load(path)
        LazyConfig.save(cfg, tmp_path / kind / "out.yaml")
        assert LazyConfig.load(tmp_path / kind / "out.yaml") == cfg
        file, line = key_line(cfg, "train.amp")
        seen.append((LazyConfig.to_yaml(cfg), Path(file or "").name, line))
    assert seen == [("train:\n  max_iter: 300\n  amp:\n    enabled: true\n", "train.py", 5)] * 2
    values = config_dict({"a-b": 1}, c=dict(d=[1, 2]))
    values.c.d.append(3)  # attribute access in the file that writes it, as where it is imported
    assert isinstance(values, DictConfig) and OmegaConf.to_container(values) == {"a-b": 1, "c": {"d": [1, 2, 3]}}


def make_linear(**kwargs):
    return torch.nn.Linear(**kwargs)


def test_a_misspelled_argument_of_a_kwargs_target_names_its_file_and_line_when_built(tmp_path):
    (tmp_path / "cfg.py").write_text(
        "from lazytrain.config import LazyCall as L\nfrom test_config import make_linear\n\n"
        "model = L(make_linear)(\n    in_features=8,\n    out_featurs=4,\n)\n"
    )
    cfg = LazyConfig.load(tmp_path / "cfg.py")  # **kwargs takes any name: nothing to check at load time
    with pytest.raises(ConfigError) as info:
        instantiate(cfg.model, key="model")
    assert str(info.value).startswith(f"{tmp_path / 'cfg.py'}:6: model: building ")
    assert "unexpected keyword argument 'out_featurs'" in str(info.value)
