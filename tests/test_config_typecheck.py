"""Types checked before anything is built: each L(...) argument against its target's annotations. An error
names the key, where it was set, the expected type and the value (run settings: test_settings.py)."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pytest
import torch
from omegaconf import OmegaConf

from lazytrain.config import ConfigError, L, LazyConfig
from lazytrain.config.typecheck import check_types, matches_type


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


class Net:
    def __init__(
        self,
        width: int,
        scale: float = 1.0,
        flag: bool = False,
        name: str = "net",
        dropout: Optional[float] = None,
        act: Literal["relu", "gelu"] = "relu",
        sizes: Sequence[int] = (1,),
        pair: tuple[int, str] = (1, "a"),
        table: Mapping[str, int] | None = None,
        either: Union[int, str] = 0,
        module: Optional[torch.nn.Module] = None,
        anything: Any = None,
        loose=None,
        sloppy: int = None,  # type: ignore[assignment]  # noqa: RUF013  # implicit Optional, as old code has it
        dims: list[int] | None = None,
    ) -> None:
        pass


def make_linear(n: int) -> torch.nn.Linear:
    return torch.nn.Linear(n, n)


def make_unknown(n: int):
    return n


class Unresolvable:
    def __init__(self, a: NoSuchType, b: int = 0) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass


def error(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        check_types(as_config(cfg))
    text = str(info.value)
    assert "\n" not in text.strip()
    return text


def as_config(d) -> Any:
    return OmegaConf.create(d, flags={"allow_objects": True})


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"width": "abc"}, "'width' expects int, got 'abc' (str)"),
        ({"width": 2.5}, "expects int, got 2.5 (float)"),
        ({"width": True}, "expects int, got True (bool)"),
        ({"width": 1, "scale": "x"}, "'scale' expects float"),
        ({"width": 1, "flag": 1}, "'flag' expects bool, got 1 (int)"),
        ({"width": 1, "name": 3}, "'name' expects str"),
        ({"width": 1, "dropout": "no"}, "'dropout' expects Optional[float]"),
        ({"width": 1, "act": "tanh"}, "'act' expects Literal['relu', 'gelu']"),
        ({"width": 1, "sizes": [1, "b"]}, "'sizes' expects Sequence[int]"),
        ({"width": 1, "sizes": "12"}, "'sizes' expects Sequence[int]"),
        ({"width": 1, "pair": [1, 2]}, "'pair' expects tuple[int, str]"),
        ({"width": 1, "table": {"a": "b"}}, "'table' expects"),
        ({"width": 1, "either": 1.5}, "'either' expects Union[int, str]"),
        ({"width": 1, "module": 3}, "'module' expects Optional[torch.nn.Module]"),
        ({"width": 1, "dims": [1.5]}, "'dims' expects"),
    ],
)
def test_each_kind_of_annotation_rejects_a_wrong_value(kwargs, bad):
    assert bad in error({"model": L(Net)(**kwargs)})


def test_values_that_fit_their_annotations_pass():
    check_types(
        as_config(
            {
                "model": L(Net)(
                    width=3,
                    scale=2,  # an int is a float
                    flag=True,
                    dropout=None,
                    act="gelu",
                    sizes=[1, 2],
                    pair=[3, "b"],  # configs hold tuples as lists
                    table={"a": 1},
                    either="s",
                    module=L(torch.nn.ReLU)(),
                    anything=object(),
                    loose="whatever",
                    sloppy=None,
                    dims=[1, 2],
                )
            }
        )
    )


def test_nested_call_is_checked_by_its_return_type():
    assert "'module' expects Optional[torch.nn.Module], got a call of" in error(
        {"model": L(Net)(width=1, module=L(dict)())}
    )
    check_types(as_config({"model": L(Net)(width=1, module=L(make_linear)(n=2))}))  # annotated return fits
    check_types(as_config({"model": L(Net)(width=L(make_unknown)(n=2))}))  # not annotated: accepted
    assert "'width' expects int, got a call of" in error({"model": L(Net)(width=L(make_linear)(n=2))})


def test_nested_call_arguments_are_checked_with_their_key():
    assert error({"model": dict(head=L(make_linear)(n="x"))}).startswith("model.head.n: ")


def test_unannotated_any_and_unresolvable_annotations_are_not_checked():
    check_types(as_config({"m": L(Net)(width=1, loose=object(), anything="x"), "u": L(Unresolvable)(a="x")}))
    assert "'b' expects int" in error({"u": L(Unresolvable)(a="x", b="y")})


def test_string_annotations_are_resolved(tmp_path):
    # this module uses `from __future__ import annotations`: every annotation above is a string
    assert isinstance(Net.__init__.__annotations__["width"], str)
    assert "expects int" in error({"model": L(Net)(width="abc")})


def test_dataclass_target_fields_are_checked():
    @dataclasses.dataclass
    class Opts:
        lr: float = 0.1

    assert "'lr' expects float" in error({"opts": L(Opts)(lr="fast")})


def test_interpolations_are_checked_after_resolution():
    text = error({"n": "abc", "model": L(Net)(width="${n}")})
    assert "got 'abc' (str) (from '${n}')" in text
    check_types(as_config({"n": 4, "model": L(Net)(width="${n}")}))


def test_error_names_file_line_and_key_of_a_value_set_in_a_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path,
        "exp.py",
        """
        import torch
        from lazytrain.config import L

        model = L(torch.nn.Linear)(
            in_features=8,
            out_features="many",
        )
        """,
    )
    with pytest.raises(ConfigError) as info:
        LazyConfig.load(path)
    assert str(info.value) == (
        "exp.py:6: model.out_features: torch.nn.Linear() argument 'out_features' expects int, got 'many' (str)."
    )


def test_error_points_at_a_later_assignment_and_into_imported_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "base.py",
        """
        import torch
        from lazytrain.config import L
        model = L(torch.nn.Linear)(in_features=8, out_features=2)
        optimizer = dict(head=L(torch.nn.Linear)(in_features=1, out_features="x"))
        """,
    )
    path = write(tmp_path, "exp.py", "from .base import model, optimizer\n\nmodel.in_features = 'wide'\n")
    cfg = LazyConfig.load(path, check=False)
    with pytest.raises(ConfigError, match=r"^exp.py:3: model.in_features: "):
        LazyConfig.check(cfg)
    cfg.model.in_features = 8
    with pytest.raises(ConfigError, match=r"^base.py:4: optimizer.head.out_features: "):
        LazyConfig.check(cfg)


def test_error_says_command_line_when_an_override_set_the_value(tmp_path):
    path = write(
        tmp_path,
        "exp.py",
        "import torch\nfrom lazytrain.config import L\nmodel = L(torch.nn.Linear)(in_features=8, out_features=2)\n",
    )
    cfg = LazyConfig.load(path, check=False)
    LazyConfig.apply_overrides(cfg, ["model.out_features=abc"])
    with pytest.raises(ConfigError) as info:
        LazyConfig.check(cfg)
    assert str(info.value).startswith("model.out_features: torch.nn.Linear() argument 'out_features' expects int")
    assert "set on the command line" in str(info.value) and "exp.py" not in str(info.value)
    cfg = LazyConfig.load(path, check=False)
    LazyConfig.apply_overrides(cfg, ["model={'in_features': 'x'}"])  # a merged dict: its leaves
    with pytest.raises(ConfigError, match=r"model.in_features: .*set on the command line"):
        LazyConfig.check(cfg)


def test_override_records_do_not_show_in_the_config(tmp_path):
    path = write(tmp_path, "exp.py", "train = dict(max_iter=3)\n")
    cfg = LazyConfig.load(path)
    LazyConfig.apply_overrides(cfg, ["train.max_iter=5"])
    assert LazyConfig.to_yaml(cfg) == "train:\n  max_iter: 5\n"


def test_matches_type_is_usable_on_its_own():
    assert matches_type(3, float) and not matches_type(True, int)
    assert matches_type([1, 2], list[int]) and not matches_type([1, "a"], list[int])
    assert matches_type(None, Optional[str]) and matches_type({"a": 1}, dict[str, int])


def param_groups(model: torch.nn.Module, weight_decay: float = 0.0) -> list:
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]


def test_none_for_the_optimizer_params_lazytrain_fills_passes_the_check(tmp_path, monkeypatch):
    from lazytrain.engine.build import build_optimizer

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    path = write(
        tmp_path,
        "exp.py",
        """
        import torch
        from lazytrain.config import L
        from test_config_typecheck import param_groups
        model = L(torch.nn.Linear)(in_features=2, out_features=3)
        optimizer = L(torch.optim.SGD)(params=None, lr=0.1)
        """,
    )
    cfg = LazyConfig.load(path)  # params=None: the model's parameters, filled when the optimizer is built
    model = torch.nn.Linear(2, 3)
    assert len(build_optimizer(cfg, model).param_groups[0]["params"]) == 2
    # model=None in a parameter-groups call: the model, filled the same way
    text = path.read_text().replace("params=None", "params=L(param_groups)(model=None, weight_decay=0.1)")
    cfg = LazyConfig.load(write(tmp_path, "groups.py", text))
    assert build_optimizer(cfg, model).param_groups[0]["weight_decay"] == 0.1


def test_none_for_another_argument_without_a_default_is_still_refused():
    assert "'in_features' expects int, got None (NoneType)" in error(
        {"model": L(torch.nn.Linear)(in_features=None, out_features=2)}
    )
    assert "grouped.params: " in error({"grouped": L(torch.optim.SGD)(params=None, lr=0.1)})


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (
            {"dim": "???", "m": L(torch.nn.Linear)("${dim}", 2)},
            "m.in_features: '${dim}' needs 'dim', which is required",
        ),
        ({"m": L(torch.nn.Linear)("${nope}", 2)}, "m.in_features: bad interpolation '${nope}': 'nope' is not a key"),
        ({"m": L(torch.nn.Linear)("${bad:1}", 2)}, "m.in_features: bad interpolation '${bad:1}': Unsupported"),
        ({"m": L(torch.nn.Sequential)(L(torch.nn.Linear)("${nope}", 2))}, "bad interpolation '${nope}'"),
        ({"s": "???", "m": L(torch.nn.Conv2d)(1, 2, kernel_size=[1, "${s}"])}, "'${s}' needs 's'"),
    ],
)
def test_check_types_reports_interpolations_as_config_errors(cfg, expected):
    assert expected in error(cfg)


def test_a_value_not_set_yet_inside_a_list_or_dict_is_not_a_type_error():
    check_types(as_config({"m": L(torch.nn.Conv2d)(1, 2, kernel_size=[1, "???"])}))
    check_types(as_config({"m": L(Net)(width=1, table={"a": "???"}, pair=[1, "???"])}))
    assert "'sizes' expects Sequence[int]" in error({"m": L(Net)(width=1, sizes=["???", "x"])})


def test_type_names_read_as_annotations():
    from collections.abc import Callable

    from lazytrain.config.typecheck import type_name

    assert type_name(Callable[[int], int]) == "Callable[[int], int]"
    assert type_name(Optional[Callable[[int, str], None]]) == "Optional[Callable[[int, str], None]]"
    assert type_name(Callable[..., torch.nn.Module]) == "Callable[..., torch.nn.Module]"


def test_numpy_numbers_fit_int_and_float():
    import numpy as np

    def f(n: int, x: float, flag: bool = False) -> None:
        pass

    check_types(as_config({"f": L(f)(n=np.int64(3), x=np.float32(0.5))}))
    check_types(as_config({"f": L(f)(n=3, x=np.int32(2))}))
    assert "'n' expects int, got True (bool)" in error({"f": L(f)(n=True, x=1.0)})
    assert "'n' expects int, got 1.5 (numpy.float64)" in error({"f": L(f)(n=np.float64(1.5), x=1.0)})
    assert "'x' expects float, got True (numpy." in error({"f": L(f)(n=1, x=np.bool_(True))})
