"""Tuples in configs: ``kernel_size=(3, 3)``, ``betas=(0.9, 0.99)``. omegaconf 2.4 stores a tuple as a
TupleConfig (2.3 turns it into a list): either way it loads, is type checked, builds, saves and comes back."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from lazytrain.config import ConfigError, LazyConfig, instantiate
from lazytrain.config.lazy import TUPLE_CONFIG

# on omegaconf 2.3 a tuple is a list once it is in a config: it builds and round-trips as a list
TUPLE = tuple if TUPLE_CONFIG is not None else list


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def first_ints(xs: Sequence[int], pair: tuple[int, int] = (0, 0)) -> tuple:
    return (xs, pair)


def receive(items):
    return items


def some_params() -> list:
    return [torch.nn.Parameter(torch.zeros(1))]


EXP = """
    import torch
    from lazytrain.config import L
    from test_config_tuples import first_ints, receive, some_params

    model = L(torch.nn.Conv2d)(1, 2, kernel_size=(3, 3))
    optimizer = L(torch.optim.AdamW)(params=L(some_params)(), betas=(0.9, 0.99))
    ints = L(first_ints)(xs=(1, 2), pair=(3, 4))
    built = L(receive)(items=(L(torch.nn.ReLU)(), 2, ("a", L(torch.nn.Identity)())))
"""


@pytest.fixture
def exp(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return write(tmp_path, "exp.py", EXP)


def test_a_config_with_tuple_arguments_loads_type_checks_and_builds(exp):
    cfg = LazyConfig.load(exp)  # type-checked: (3, 3) fits Union[int, tuple[int, int]], (1, 2) Sequence[int]
    conv = instantiate(cfg.model)
    assert conv.kernel_size == (3, 3)
    assert tuple(instantiate(cfg.optimizer).defaults["betas"]) == (0.9, 0.99)
    assert instantiate(cfg.ints) == (TUPLE((1, 2)), TUPLE((3, 4)))


def test_calls_inside_a_tuple_are_built_and_the_target_receives_a_tuple(exp):
    items = instantiate(LazyConfig.load(exp).built)
    assert type(items) is TUPLE
    assert isinstance(items[0], torch.nn.ReLU) and items[1] == 2
    assert type(items[2]) is TUPLE and items[2][0] == "a" and isinstance(items[2][1], torch.nn.Identity)


def test_values_inside_a_tuple_are_type_checked(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    path = write(
        tmp_path,
        "bad.py",
        """
        from lazytrain.config import L
        from test_config_tuples import first_ints, receive

        ints = L(first_ints)(xs=(1, "b"))
        nested = L(receive)(items=(L(first_ints)(xs=[1], pair=(1, "x")),))
        """,
    )
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(path)
    text = str(info.value)
    assert text.startswith("bad.py:4: ints.xs: ") or text.startswith(f"{path}:4: ints.xs: ")
    assert "expects Sequence[int], got (1, 'b') (tuple)" in text or "got [1, 'b'] (list)" in text
    cfg = LazyConfig.load(path, check=False)
    del cfg["ints"]
    with pytest.raises(ConfigError, match=r"nested.items.0.pair: .*argument 'pair' expects tuple\[int, int\]"):
        LazyConfig.check(cfg)


def test_tuples_survive_yaml(exp, tmp_path):
    cfg = LazyConfig.load(exp)
    LazyConfig.save(cfg, tmp_path / "c.yaml")
    assert not (tmp_path / "c.pkl").exists()
    loaded = LazyConfig.load(tmp_path / "c.yaml")
    assert loaded == cfg
    assert instantiate(loaded.model).kernel_size == (3, 3)
    items = instantiate(loaded.built)
    assert type(items) is TUPLE and isinstance(items[0], torch.nn.ReLU)


def test_to_py_round_trips_tuples(exp, tmp_path):
    cfg = LazyConfig.load(exp)
    text = LazyConfig.to_py(cfg)
    if TUPLE_CONFIG is not None:
        assert "kernel_size=(3, 3)" in text and "('a', L(torch.nn.Identity)())" in text
    back = LazyConfig.load(write(tmp_path, "back.py", text))
    assert back == cfg
    assert type(instantiate(back.built)) is TUPLE


def test_a_one_item_tuple_is_written_as_a_tuple(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = LazyConfig.load(write(tmp_path, "one.py", "from lazytrain.config import L\nfrom test_config_tuples import"
                                " receive\nx = L(receive)(items=(1,))\n"), check=True)  # fmt: skip
    back = LazyConfig.load(write(tmp_path, "back.py", LazyConfig.to_py(cfg)))
    assert instantiate(back.x) == TUPLE((1,))


@pytest.mark.skipif(TUPLE_CONFIG is None, reason="omegaconf 2.3 stores tuples as lists")
def test_an_item_of_a_tuple_cannot_be_overridden_but_the_whole_tuple_can(exp):
    cfg = LazyConfig.load(exp)
    with pytest.raises(ConfigError) as info:
        LazyConfig.apply_overrides(cfg, ["model.kernel_size.0=5"])
    assert "\n" not in str(info.value)
    assert "model.kernel_size" in str(info.value) and "model.kernel_size=[5, 3]" in str(info.value)
    LazyConfig.apply_overrides(cfg, ["model.kernel_size=[5, 3]"])
    assert instantiate(cfg.model).kernel_size == (5, 3)


def test_a_top_level_tuple_is_a_tuple_like_one_inside_a_call(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    path = write(
        tmp_path,
        "top.py",
        """
        from lazytrain.config import L
        from test_config_tuples import receive
        sizes = (1, 2)
        x = L(receive)(items="${sizes}")
        """,
    )
    cfg = LazyConfig.load(path)
    assert instantiate(cfg.x) == TUPLE((1, 2)) and instantiate(cfg.sizes) == TUPLE((1, 2))
    assert LazyConfig.load(write(tmp_path, "back.py", LazyConfig.to_py(cfg))) == cfg


def test_a_value_yaml_cannot_hold_inside_a_tuple_comes_back_from_the_side_file(tmp_path):
    cfg = LazyConfig.load(write(tmp_path, "exp.py", "x = dict(t=(1, (2, lambda v: v + 1)))\n"))
    with pytest.warns(UserWarning, match=r"x\.t\.1\.1"):
        LazyConfig.save(cfg, tmp_path / "c.yaml")
    loaded = LazyConfig.load(tmp_path / "c.yaml")
    built = instantiate(loaded.x)["t"]
    assert type(built) is TUPLE and type(built[1]) is TUPLE and built[1][1](1) == 2
