"""The hook contract: :class:`HookBase`, and :class:`HookTrainer`, the typed view of the trainer a hook reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Optional, Protocol

import torch

from ..checkpoint import Checkpointer
from ..evaluation import DatasetEvaluator
from ..events import EventStorage

__all__ = ["HookBase", "HookTrainer"]


class HookTrainer(Protocol):
    """What a hook may read from ``self.trainer`` (:class:`lazytrain.engine.Trainer` gives all of it; a bare
    :class:`TrainerBase` subclass the loop's part). Read-only: a hook changes training through these objects
    (``storage.put_scalar``, ``lr_scheduler.step()``), never by rebinding them."""

    # the loop's state (TrainerBase); iteration numbers: see lazytrain.iterations
    @property
    def iter(self) -> int: ...  # the index of the iteration being run
    @property
    def start_iter(self) -> int: ...  # iterations done before this run (a resumed run's)
    @property
    def max_iter(self) -> int: ...
    @property
    def completed(self) -> bool: ...  # in after_train: whether training ran to max_iter
    @property
    def failure(self) -> Optional[BaseException]: ...  # in after_train: what stopped training, if anything
    @property
    def storage(self) -> EventStorage: ...  # where hooks put scalars and images; exists while train() runs
    @property
    def hooks(self) -> Sequence[HookBase]: ...

    def average_over_ranks_and_check_finite(self) -> None: ...

    # what the train step works with (Trainer)
    @property
    def model(self) -> torch.nn.Module: ...  # as trained: perhaps wrapped by DDP / torch.compile
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def lr_scheduler(self) -> Optional[torch.optim.lr_scheduler.LRScheduler]: ...
    @property
    def grad_scaler(self) -> torch.amp.GradScaler: ...
    @property
    def data_loader(self) -> Iterable[Any]: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def num_threads(self) -> int: ...
    @property
    def ema(self) -> Optional[torch.optim.swa_utils.AveragedModel]: ...  # updated by EMAHook
    @property
    def checkpointer(self) -> Optional[Checkpointer]: ...
    @property
    def evaluator(self) -> Optional[DatasetEvaluator]: ...
    @property
    def test_loader(self) -> Optional[Iterable[Any]]: ...
    @property
    def latest_eval(self) -> Optional[tuple[int, dict[str, float]]]: ...  # set by test(): (index, flat results)
    @property
    def cfg(self) -> Any: ...  # the run's config (a DictConfig) or None
    @property
    def config_yaml(self) -> str: ...  # the resolved config, stored in every checkpoint

    def test(self) -> dict[str, Any]: ...

    def eval_model(self) -> torch.nn.Module: ...


class HookBase:
    """A hook: override any of ``before_train``, ``before_step``, ``after_step``, ``after_train``; the
    trainer calls them in the order of its hook list (``lazytrain hooks CONFIG`` prints it).

    ``self.trainer`` (set by ``register_hooks``) is what the hook may read: :class:`HookTrainer` lists it,
    typed. Read it when the hook runs, not in ``__init__``: a hook list is built from a config alone. To log a
    value, put it in the storage: ``self.trainer.storage.put_scalar("name", value)`` (a float or a device
    tensor: tensors are converted together once per log period); ``put_scalars(**values)`` and ``put_image``
    do the same for several values and for pictures. ``trainer.iter`` and every iteration number count as
    :mod:`lazytrain.iterations` says.

    A hook that reads what another hook sets names that hook in ``runs_after``: the hook list is checked
    (:func:`lazytrain.engine.build_hooks`), and one in the wrong order is a ConfigError. A hook with
    ``state_dict`` / ``load_state_dict`` has its state saved in every checkpoint and restored on resume.
    ``__repr__`` (shown by ``lazytrain hooks``) names the hook and its period.
    """

    trainer: HookTrainer = None  # type: ignore[assignment]  # set by TrainerBase.register_hooks
    runs_after: ClassVar[tuple[type[HookBase], ...]] = ()  # hooks that must come earlier in the hook list

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def __repr__(self) -> str:
        period = getattr(self, "period", None)
        return f"{type(self).__name__}(period={period})" if period is not None else f"{type(self).__name__}()"
