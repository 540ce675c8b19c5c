"""What a user coming from detectron2's LazyConfig expects: dataclasses, *args, merged dict overrides,
load(keys=...), load_rel, to_py, file names that are not Python names, call configs as targets."""

from __future__ import annotations

import dataclasses
import functools
import textwrap
from pathlib import Path
from typing import Literal

import omegaconf
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from lazytrain.config import ConfigError, L, LazyConfig, instantiate


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@dataclasses.dataclass
class Point:
    x: int = 0
    y: float = 1.0


@dataclasses.dataclass
class Box:
    corner: Point = dataclasses.field(default_factory=Point)
    label: str = "box"


def describe(p: Point, scale: int = 1) -> tuple:
    return (type(p).__name__, p.x * scale, p.y)


BASE = """
    import torch
    from lazytrain.config import L

    num_classes = 5
    model = L(torch.nn.Linear)(8, "${num_classes}")
    optimizer = L(torch.optim.SGD)(lr=0.1, momentum=0.9)
    train = dict(max_iter=10)
"""


# ---------------------------------------------------------------- dataclasses


def test_dataclass_target_builds_the_dataclass():
    cfg = L(Point)(x=3)
    assert cfg._target_ is Point
    assert instantiate(cfg) == Point(x=3, y=1.0)


def test_dataclass_instance_argument_reaches_the_target_as_that_instance():
    cfg = L(describe)(p=Point(x=2, y=5.0), scale=3)
    cfg.p.x = 4  # its fields are config keys
    assert instantiate(cfg) == ("Point", 12, 5.0)
    nested = instantiate(L(dict)(box=Box(corner=Point(x=1), label="b")))
    assert nested["box"] == Box(corner=Point(x=1), label="b")


def test_dataclass_target_and_values_survive_yaml(tmp_path, recwarn):
    cfg = OmegaConf.create(
        {"n": 7, "point": L(Point)(x="${n}"), "call": L(describe)(p=Point(x="${n}"))}, flags={"allow_objects": True}
    )
    out = tmp_path / "c.yaml"
    LazyConfig.save(cfg, out)
    assert not (tmp_path / "c.pkl").exists() and not [w for w in recwarn if "cloudpickle" in str(w.message)]
    assert "!dataclass:" in out.read_text()
    loaded = LazyConfig.load(out)
    assert loaded == cfg
    assert loaded.point._target_ is Point
    assert OmegaConf.get_type(loaded.call.p) is Point
    assert instantiate(loaded.point) == Point(x=7)
    assert instantiate(loaded.call) == ("Point", 7, 1.0)


@dataclasses.dataclass
class Mode:
    n: int = 0
    kind: Literal["a", "b"] = "a"


def test_a_bad_override_of_a_dataclass_field_is_one_paragraph():
    cfg = OmegaConf.create({"h": L(describe)(p=Mode())}, flags={"allow_objects": True})
    cases = [("h.p.n=abc", "h.p.n: cannot set this key to 'abc': Value 'abc' of type 'str' could not be converted")]
    if not omegaconf.__version__.startswith("2.3"):  # omegaconf 2.3 does not check Literal fields
        cases.append(("h.p.kind=c", "h.p.kind: cannot set this key to 'c': Invalid value 'c', expected one of"))
    for override, expected in cases:
        with pytest.raises(ConfigError) as info:
            LazyConfig.apply_overrides(cfg, [override])
        assert str(info.value).startswith(expected) and "\n" not in str(info.value)
        assert "full_key" not in str(info.value) and "object_type" not in str(info.value)


def test_local_dataclass_target_round_trips_through_the_side_file(tmp_path):
    @dataclasses.dataclass
    class Local:
        a: int = 1

    cfg = OmegaConf.create({"thing": L(Local)(a=4)}, flags={"allow_objects": True})
    with pytest.warns(UserWarning, match="thing._target_"):
        LazyConfig.save(cfg, tmp_path / "c.yaml")
    assert instantiate(LazyConfig.load(tmp_path / "c.yaml").thing).a == 4


# ---------------------------------------------------------------- *args


def test_positional_arguments_to_a_callable_with_varargs_build_and_round_trip(tmp_path):
    cfg = OmegaConf.create(
        {"model": L(torch.nn.Sequential)(L(torch.nn.Linear)(2, 3), L(torch.nn.ReLU)())}, flags={"allow_objects": True}
    )
    model = instantiate(cfg.model)
    assert isinstance(model, torch.nn.Sequential) and isinstance(model[1], torch.nn.ReLU)
    LazyConfig.save(cfg, tmp_path / "c.yaml")
    loaded = LazyConfig.load(tmp_path / "c.yaml")
    assert loaded == cfg
    assert [type(m) for m in instantiate(loaded.model)] == [torch.nn.Linear, torch.nn.ReLU]


def test_named_parameters_before_varargs_and_positional_only_ones_are_passed_in_order():
    def f(a, /, b, *rest, k=0):
        return (a, b, rest, k)

    cfg = L(f)(1, 2, 3, 4, k=5)
    assert cfg.a == 1 and cfg.b == 2 and list(cfg._args_) == [3, 4]
    assert instantiate(cfg) == (1, 2, (3, 4), 5)
    assert instantiate(L(f)(1, b=2)) == (1, 2, (), 0)


def test_too_many_positional_arguments_without_varargs_is_an_error():
    with pytest.raises(ConfigError, match=r"at most 5 positional arguments"):
        L(torch.nn.Linear)(1, 2, True, None, None, 6)


# ---------------------------------------------------------------- overrides


def test_dict_override_merges_into_the_node_and_keeps_other_keys(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    LazyConfig.apply_overrides(cfg, ["optimizer={'lr': 0.5}"])
    assert cfg.optimizer.lr == 0.5 and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer._target_ is torch.optim.SGD


def test_dict_override_checks_each_of_its_keys(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    with pytest.raises(ConfigError, match=r"optimizer.lrr.*Did you mean 'lr'"):
        LazyConfig.apply_overrides(cfg, ["optimizer={'lrr': 0.5}"])


def test_non_dict_override_replaces_the_value(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", textwrap.dedent(BASE) + "layers = [1, 2, 3]\n"))
    LazyConfig.apply_overrides(cfg, ["layers=[4]"])
    assert list(cfg.layers) == [4]


# ---------------------------------------------------------------- load(keys=...), load_rel


def test_load_with_keys_returns_those_values(tmp_path):
    path = write(tmp_path, "exp.py", BASE)
    model, train = LazyConfig.load(path, ("model", "train"))
    assert model._target_ is torch.nn.Linear and train.max_iter == 10
    assert model.out_features == 5  # interpolations still resolve against the whole file
    assert LazyConfig.load(path, "num_classes") == 5
    assert isinstance(LazyConfig.load(path, "optimizer"), DictConfig)


def test_load_with_a_missing_key_suggests(tmp_path):
    path = write(tmp_path, "exp.py", BASE)
    with pytest.raises(ConfigError, match=r"no top-level key 'modle'.*Did you mean 'model'"):
        LazyConfig.load(path, "modle")


def test_check_is_keyword_only(tmp_path):
    path = write(tmp_path, "exp.py", BASE)
    with pytest.raises(TypeError):
        LazyConfig.load(path, None, False)  # type: ignore[misc]


def test_config_file_name_that_is_not_a_python_name_loads_by_path(tmp_path):
    write(tmp_path, "my-configs/base.py", BASE)
    path = write(tmp_path, "my-configs/my-exp.py", "from .base import model, num_classes, train\ntrain.max_iter = 3\n")
    cfg = LazyConfig.load(path)
    assert cfg.train.max_iter == 3 and cfg.model.in_features == 8


def test_load_rel_in_a_config_file_loads_a_file_beside_it(tmp_path):
    write(tmp_path, "configs/base-exp.py", BASE)
    path = write(
        tmp_path,
        "configs/sub/exp.py",
        """
        from lazytrain.config import LazyConfig
        model, train, num_classes = LazyConfig.load_rel("../base-exp.py", ("model", "train", "num_classes"))
        common = LazyConfig.load_rel("../base-exp.py")
        train.max_iter = 4
        """,
    )
    cfg = LazyConfig.load(path)
    assert cfg.train.max_iter == 4 and cfg.model.out_features == 5
    assert cfg.common.optimizer.lr == 0.1


def test_load_rel_of_a_missing_file_names_the_calling_line(tmp_path):
    path = write(tmp_path, "exp.py", 'from lazytrain.config import LazyConfig\nx = LazyConfig.load_rel("no-such.py")\n')
    with pytest.raises(ConfigError, match=r"exp.py:2: .*no-such.py' does not exist"):
        LazyConfig.load(path)


def test_load_rel_cycle_is_named(tmp_path):
    write(tmp_path, "a-1.py", 'from lazytrain.config import LazyConfig\nx = LazyConfig.load_rel("b-1.py")\n')
    write(tmp_path, "b-1.py", 'from lazytrain.config import LazyConfig\ny = LazyConfig.load_rel("a-1.py")\n')
    with pytest.raises(ConfigError, match=r"cycle: .*a-1.py -> .*b-1.py -> .*a-1.py"):
        LazyConfig.load(tmp_path / "a-1.py")


# ---------------------------------------------------------------- to_py


def test_to_py_writes_a_config_file_that_loads_back_to_an_equal_config(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    cfg.seq = L(torch.nn.Sequential)(L(torch.nn.ReLU)())
    cfg.point = L(Point)(x=2)
    cfg.call = L(describe)(p=Point(x=3))
    cfg.odd = {"a-b": 1, "inf": float("inf")}
    cfg.loader = dict(collate_fn=torch.utils.data.default_collate)
    text = LazyConfig.to_py(cfg)
    assert "model = L(torch.nn.Linear)(in_features=8, out_features='${num_classes}')" in text
    back = LazyConfig.load(write(tmp_path, "back.py", text))
    assert back == cfg
    assert OmegaConf.get_type(back.call.p) is Point and back.point._target_ is Point
    assert instantiate(back.seq)[0].__class__ is torch.nn.ReLU


def test_to_py_names_the_key_of_a_value_python_cannot_spell():
    cfg = OmegaConf.create({"scale": dict(f=lambda x: x)}, flags={"allow_objects": True})
    with pytest.raises(ConfigError, match=r"scale\.f: .*cannot be written as Python"):
        LazyConfig.to_py(cfg)


def test_to_py_with_a_prefix_writes_it_before_each_name(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", BASE))
    assert "cfg.train = {'max_iter': 10}" in LazyConfig.to_py(cfg, prefix="cfg.")


# ---------------------------------------------------------------- call configs as targets


def test_call_config_as_target_calls_what_it_builds():
    cfg = L(L(functools.partial)(describe, scale=10))(p=Point(x=2))
    assert instantiate(cfg) == ("Point", 20, 1.0)


def test_call_config_target_arguments_are_checked_when_built():
    cfg = OmegaConf.create({"m": L(L(functools.partial)(describe))(q=1)}, flags={"allow_objects": True})
    with pytest.raises(ConfigError, match=r"^m: .*unexpected argument 'q'"):
        instantiate(cfg)


def test_a_plain_dict_as_target_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"got a dict as its target"):
        L({"a": 1})


def varf(a, *args, k=0):
    return (a, args, k)


def test_to_py_writes_parameters_before_varargs_positionally(tmp_path):
    def only(a, /, b=0):
        return (a, b)

    cfg = OmegaConf.create({"v": L(varf)(1, 2, 3, k=4), "w": L(varf)(1)}, flags={"allow_objects": True})
    text = LazyConfig.to_py(cfg)
    assert "v = L(test_config_detectron2.varf)(1, 2, 3, k=4)" in text
    back = LazyConfig.load(write(tmp_path, "back.py", text))
    assert back == cfg
    assert instantiate(back.v) == (1, (2, 3), 4) and instantiate(back.w) == (1, (), 0)


def test_to_py_of_keys_named_like_builtins_and_modules(tmp_path):
    cfg = OmegaConf.create(
        {"dict": 3, "float": 2, "math": 1, "nested": dict(a=dict(b=1)), "limits": [float("inf"), -float("inf")]},
        flags={"allow_objects": True},
    )
    back = LazyConfig.load(write(tmp_path, "back.py", LazyConfig.to_py(cfg)))
    assert back == cfg


class Scaler:
    def __init__(self, factor: int = 1) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return x * self.factor


def test_errors_about_the_object_a_call_config_builds_name_it_by_its_target():
    assert instantiate(L(L(Scaler)(factor=3))(x=2)) == 6
    with pytest.raises(ConfigError) as info:
        instantiate(L(L(Scaler)(factor=3))(b=2))
    text = str(info.value)
    assert "the object built by _target_ (test_config_detectron2.Scaler(...)) got an unexpected argument 'b'" in text
    assert " object at 0x" not in text
    with pytest.raises(ConfigError) as info:
        instantiate(L(L(Point)(x=1))())
    assert "the object built by _target_ (test_config_detectron2.Point(...)) cannot be called" in str(info.value)
    with pytest.raises(ConfigError) as info:
        instantiate(L(L(Scaler)(factor=3))(x=None))
    assert str(info.value).startswith(
        "<config>: building the object built by _target_ (test_config_detectron2.Scaler(...)) failed: TypeError"
    )
