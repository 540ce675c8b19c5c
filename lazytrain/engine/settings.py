"""A run's config: the ``train`` settings and their defaults, the keys a run requires, and
:func:`load_run_config`, the one way a config file becomes a run's config (the CLI and the tests use it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

from omegaconf import DictConfig, OmegaConf

from ..config import LazyConfig
from ..config.lazy import SEQUENCE_CONFIGS, raw_value
from ..config.provenance import key_line, set_on_command_line
from ..errors import ConfigError, did_you_mean

__all__ = ["TRAIN_DEFAULTS", "add_train_defaults", "check_required", "check_train_settings", "load_run_config"]

TRAIN_DEFAULTS: dict[str, Any] = dict(
    output_dir=None,  # None: output/<config file name>
    max_iter="???",
    seed=0,
    device="auto",
    # modules: glob patterns over module names; autocast inside them only, the rest in fp32 ([]: the whole step)
    amp=dict(enabled=False, dtype="bf16", modules=[]),
    grad_accum=1,
    clip_grad=dict(max_norm=None, norm_type=2.0),
    log_period=20,
    checkpoint_period=1000,
    keep_last=3,
    eval_period=0,
    init_checkpoint="",
    ddp=dict(find_unused_parameters=False, broadcast_buffers=False),
    deterministic=False,
    hooks_replace=False,
    best=dict(metric=None, mode="max"),  # metric: a name the evaluator returns; None: no model_best.pth
    ema=dict(enabled=False, decay=0.9998),
    freeze=[],  # glob patterns over parameter names: no gradients, not in the optimizer
    freeze_norm_eval=True,  # the norm layers of frozen modules in eval mode: their running statistics kept
    activation_checkpointing=[],  # glob patterns over module names: forward recomputed in backward
    init_rename=[],  # [[regex, replacement], ...] applied to init_checkpoint's keys before loading
    init_strict=False,  # True: any missing / unexpected / mismatched key of init_checkpoint is an error
    compile=dict(enabled=False, mode=None, backend="inductor"),  # torch.compile of the train step's model
    profile=dict(enabled=False, start_iter=10, num_iters=5),  # ProfilerHook: a trace of iterations 11-15
    hang_timeout=300,  # seconds without progress on a rank before the job stops naming it (0: never)
)


def load_run_config(
    path: Union[str, os.PathLike[str]], overrides: Sequence[str] = (), output_dir: Optional[str] = None
) -> DictConfig:
    """What ``lazytrain train PATH OVERRIDES... [--output-dir DIR]`` runs: the file, the ``train`` defaults,
    the overrides, the checks, then ``output_dir`` (which wins over ``train.output_dir``)."""
    cfg = LazyConfig.load(path, check=False)
    add_train_defaults(cfg, str(path))  # before the check: configs may refer to ${train.seed} and the like
    LazyConfig.apply_overrides(cfg, list(overrides))
    check_train_layout(cfg)  # before the check: `train=5` is named as such, not as a bad ${train.seed}
    LazyConfig.check(cfg)
    if output_dir:
        cfg.train.output_dir = output_dir
    check_train_settings(cfg)
    return cfg


def add_train_defaults(cfg: DictConfig, config_path: Optional[str] = None) -> DictConfig:
    """Fill every missing ``train.*`` key with its default (in place); a misspelled key is an error."""
    user = cfg.get("train")
    if user is None:
        user = OmegaConf.create({}, flags={"allow_objects": True})
    if not isinstance(user, DictConfig):
        raise _error(cfg, "train", "must be a dict of run settings", user)
    _check_known(user, TRAIN_DEFAULTS, "train", cfg)
    merged = OmegaConf.merge(OmegaConf.create(TRAIN_DEFAULTS, flags={"allow_objects": True}), user)
    if merged.output_dir is None:
        name = os.path.splitext(os.path.basename(config_path))[0] if config_path else "run"
        merged.output_dir = os.path.join("output", name)
    cfg.train = merged
    return cfg


# settings of detectron2's configs/common/train.py that lazytrain spells otherwise or does not have
_DETECTRON2_SETTINGS = {
    "train.checkpointer": "detectron2's checkpointer.period and checkpointer.max_to_keep are "
    "train.checkpoint_period and train.keep_last here.",
    "train.ddp.fp16_compression": "lazytrain does not compress DDP gradients: remove it "
    "(train.amp.dtype='fp16' is mixed precision).",
}


def _check_known(user: DictConfig, defaults: dict[str, Any], prefix: str, root: DictConfig) -> None:
    for key in user:
        if key not in defaults:
            path = f"{prefix}.{key!s}"
            file, line = _where(root, path)
            raise ConfigError(
                "unknown train setting.",
                file=file,
                line=line,
                key=path,
                hint=_DETECTRON2_SETTINGS.get(path)
                or did_you_mean(str(key), defaults)
                or f"Known settings: {', '.join(defaults)}.",
            )
        if isinstance(defaults[key], dict) and isinstance(user._get_node(key), DictConfig):
            _check_known(user[key], defaults[key], f"{prefix}.{key}", root)


def check_train_layout(cfg: DictConfig) -> None:
    """A ConfigError unless ``cfg.train`` is a dict of known settings in which each setting whose default is
    a dict (``amp``, ``ema``, ``clip_grad``, ...) is a dict too: ``train.amp=true`` is named, with where it
    was set, before anything reads ``train.amp.enabled``."""
    train = _resolved(cfg, "train")
    if train is not _UNRESOLVED and not _is_dict(train):
        raise _error(cfg, "train", "must be a dict of run settings", train)
    if not isinstance(train, DictConfig):
        return  # an interpolation that does not resolve: LazyConfig.check names it
    for name, default in TRAIN_DEFAULTS.items():
        value = _resolved(train, name) if isinstance(default, dict) and name in train else _UNRESOLVED
        if value is not _UNRESOLVED and not _is_dict(value):
            keys = ", ".join(f"{name}.{k}" for k in default)
            raise _error(cfg, f"train.{name}", f"must be a dict ({keys})", value)
    _check_known(train, TRAIN_DEFAULTS, "train", cfg)


_UNRESOLVED = object()


def _resolved(node: DictConfig, key: str) -> Any:
    """``node[key]`` (None when absent), or ``_UNRESOLVED`` for an interpolation that does not resolve."""
    try:
        return node.get(key)
    except Exception:
        return _UNRESOLVED


def _is_dict(value: Any) -> bool:
    return isinstance(value, DictConfig) and not value._is_none()


def _where(cfg: DictConfig, key: str) -> tuple[Optional[str], Optional[int]]:
    """``("command line", None)`` when an override set ``key`` (or a node above it), else the file and line
    of the statement that set it, as type errors name them (``lazytrain config CONFIG --where KEY``)."""
    if set_on_command_line(cfg, key):
        return "command line", None
    return key_line(cfg, key)


def _error(cfg: DictConfig, key: str, must: str, value: Any) -> ConfigError:
    """``FILE:LINE: train.x: must be ..., got VALUE (TYPE) (from '${...}').``"""
    shown = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    message = f"{must}, got {shown!r} ({type(shown).__name__})"
    try:
        raw = raw_value(cfg, key)
    except Exception:  # a key below a value that is not a dict
        raw = None
    if isinstance(raw, str) and "${" in raw and raw != shown:
        message += f" (from {raw!r})"
    file, line = _where(cfg, key)
    return ConfigError(message + ".", file=file, line=line, key=key)


def _int(minimum: int) -> tuple[str, Callable[[Any], bool]]:
    return f"an integer >= {minimum}", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _positive_float_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)


_BOOL = ("true or false", lambda v: isinstance(v, bool))
_STR = ("a string", lambda v: isinstance(v, str))
# what each leaf of ``train`` must hold, checked before anything is built: (what it must be, the test)
_SETTING_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "output_dir": _STR,
    "max_iter": _int(1),
    "seed": _int(0),
    "device": _STR,
    "amp.enabled": _BOOL,
    "amp.dtype": ('"bf16" or "fp16"', lambda v: v in ("bf16", "fp16", "bfloat16", "float16")),
    # None: absent from a train.amp given whole by an interpolation, as []
    "amp.modules": (
        "a list of glob patterns over module names ([]: the whole step)",
        lambda v: v is None or _str_list(v),
    ),
    "grad_accum": _int(1),
    "clip_grad.max_norm": ("a number > 0, or None for no clipping", _positive_float_or_none),
    "clip_grad.norm_type": ("a number > 0 (2.0: Euclidean; inf: max norm)", _positive_float_or_none),
    "log_period": _int(1),
    "checkpoint_period": ("an integer >= 0 (0: only the final checkpoint)", _int(0)[1]),
    "keep_last": ("an integer >= 0 (0: keep every checkpoint)", _int(0)[1]),
    "eval_period": ("an integer >= 0 (0: evaluate at the end only)", _int(0)[1]),
    "init_checkpoint": ("a path to a checkpoint, or an empty string", lambda v: isinstance(v, str)),
    "ddp.find_unused_parameters": _BOOL,
    "ddp.broadcast_buffers": _BOOL,
    "deterministic": _BOOL,
    "hooks_replace": _BOOL,
    "best.metric": ("a metric name the evaluator returns, or None", lambda v: v is None or isinstance(v, str)),
    "best.mode": ('"max" or "min"', lambda v: v in ("max", "min")),
    "ema.enabled": _BOOL,
    "ema.decay": (
        "a number in (0, 1)",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
    ),
    "freeze": ("a list of glob patterns over parameter names", lambda v: _str_list(v)),
    "freeze_norm_eval": _BOOL,
    "activation_checkpointing": ("a list of glob patterns over module names", lambda v: _str_list(v)),
    "init_rename": ("a list of [regex, replacement] pairs", lambda v: _pair_list(v)),
    "init_strict": _BOOL,
    "compile.enabled": _BOOL,
    "compile.mode": (
        'None or one of "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"',
        lambda v: v in (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    ),
    "compile.backend": _STR,
    "profile.enabled": _BOOL,
    "profile.start_iter": _int(0),
    "profile.num_iters": _int(1),
    "hang_timeout": (
        "a number of seconds >= 0 (0: no watchdog)",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
    ),
}


_SEQUENCES: tuple[Any, ...] = (list, tuple, *SEQUENCE_CONFIGS)


def _str_list(v: Any) -> bool:
    return isinstance(v, _SEQUENCES) and all(isinstance(x, str) for x in v)


def _pair_list(v: Any) -> bool:
    return isinstance(v, _SEQUENCES) and all(_str_list(x) and len(x) == 2 for x in v)


def check_train_settings(cfg: DictConfig) -> None:
    """A ConfigError (exit 2) for the first ``train.*`` value of the wrong type or out of range, or an
    unknown setting (``+train.max_iters=3``), naming the key, where it was set (the command line, or the
    config file and line, as ``lazytrain config CONFIG --where KEY`` says) and what it must be."""
    check_train_layout(cfg)
    train = cfg.train
    for name, (expected, ok) in _SETTING_CHECKS.items():
        parent_key, _, leaf = name.rpartition(".")
        parent = OmegaConf.select(train, parent_key) if parent_key else train
        if not isinstance(parent, DictConfig) or OmegaConf.is_missing(parent, leaf):
            continue  # a required value not given yet: check_required says what to add
        value = parent.get(leaf)
        if not ok(value):
            raise _error(cfg, f"train.{name}", f"must be {expected}", value)


_REQUIRED = {
    "model": "model = L(MyModel)(...): the torch.nn.Module to train",
    "optimizer": "optimizer = L(torch.optim.AdamW)(lr=1e-3): its params are filled with the model's",
    "dataloader.train": "dataloader = dict(train=L(build_train_loader)(dataset=..., batch_size=...))",
    "train.max_iter": "train.max_iter = 1000 (or the override train.max_iter=1000)",
}


def check_required(cfg: DictConfig, keys: tuple[str, ...] = tuple(_REQUIRED)) -> None:
    """A ConfigError naming the first required key the config lacks and what to add (or an unknown
    ``train`` setting, e.g. one added with ``+train.max_iters=...``)."""
    if isinstance(cfg.get("train"), DictConfig):
        _check_known(cfg.train, TRAIN_DEFAULTS, "train", cfg)
    for key in keys:
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if not isinstance(parent, DictConfig) or leaf not in parent or OmegaConf.is_missing(parent, leaf):
            raise ConfigError("this config has no value for this required key.", key=key, hint=f"Add {_REQUIRED[key]}.")
