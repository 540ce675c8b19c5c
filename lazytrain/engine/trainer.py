"""`Trainer`: the train step (AMP, gradient accumulation, clipping) on top of TrainerBase."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Optional

import torch

from ..checkpoint import Checkpointer
from ..data import describe_batch, to_device
from ..errors import LazytrainError, TrainingError, UserCodeError
from ..evaluation import DatasetEvaluator, flatten_results, format_results, inference_on_dataset
from ..loader_workers import IgnoreStopSignals, shut_down_workers
from .hook_api import HookTrainer
from .train_loop import TrainerBase

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "amp_torch_dtype", "as_loss_dict", "autocast_context", "make_grad_scaler", "unwrap_model"]

_AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class Trainer(TrainerBase):
    """One iteration = ``grad_accum`` micro-batches, forward and backward each, then one optimizer step.

    Each micro-batch's loss is divided by ``grad_accum``, so the update equals that of one batch
    ``grad_accum`` times larger. ``amp_dtype="fp16"`` enables the GradScaler; with ``"bf16"`` or without AMP
    it is a disabled one, whose calls pass straight through.

    What the standard hooks read is given here: ``lr_scheduler`` (stepped by LRScheduler), ``checkpointer``
    (PeriodicCheckpointer), ``evaluator`` and ``test_loader`` (EvalHook, through :meth:`test`), ``ema`` (the
    EMA of the weights that EMAHook updates and evaluation uses) and ``config_yaml`` (the resolved config
    stored in every checkpoint). :func:`lazytrain.engine.build_trainer`
    builds them all from a config.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device | str = "cpu",
        amp_enabled: bool = False,
        amp_dtype: str = "bf16",
        grad_accum: int = 1,
        clip_max_norm: Optional[float] = None,
        clip_norm_type: float = 2.0,
        grad_scaler: Optional[torch.amp.GradScaler] = None,
        lr_scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
        checkpointer: Optional[Checkpointer] = None,
        evaluator: Optional[DatasetEvaluator] = None,
        test_loader: Optional[Iterable[Any]] = None,
        ema: Optional[torch.optim.swa_utils.AveragedModel] = None,
        cfg: Any = None,
        config_yaml: str = "",
    ) -> None:
        super().__init__()
        if grad_accum < 1:
            raise ValueError(f"train.grad_accum must be >= 1, got {grad_accum}.")
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.grad_accum = grad_accum
        self.clip_max_norm = clip_max_norm
        self.clip_norm_type = clip_norm_type
        self.amp_enabled = amp_enabled
        self.amp_dtype = amp_torch_dtype(amp_dtype)
        self.grad_scaler = (
            grad_scaler if grad_scaler is not None else make_grad_scaler(self.device, amp_enabled, amp_dtype)
        )
        self.lr_scheduler = lr_scheduler
        self.checkpointer = checkpointer
        self.evaluator = evaluator
        self.test_loader = test_loader
        self.ema = ema
        self.latest_eval: Optional[tuple[int, dict[str, float]]] = None
        self.cfg = cfg
        self.config_yaml = config_yaml
        self.num_threads = torch.get_num_threads()
        self._data_iter: Optional[Iterator[Any]] = None
        self._epoch = 0  # epochs of a finite loader seen so far
        # an autocast context costs a few microseconds even when disabled: skip it without AMP
        self._autocast = self.autocast() if amp_enabled else contextlib.nullcontext()

    def _next_batch(self) -> Any:
        """The next batch; a finite loader (a plain DataLoader, a list) starts a new epoch when it runs out."""
        assert self._data_iter is not None
        try:
            return next(self._data_iter)
        except StopIteration:
            self._epoch += 1
            set_epoch = getattr(getattr(self.data_loader, "sampler", None), "set_epoch", None)
            if set_epoch is not None:  # a DistributedSampler reshuffles per epoch
                set_epoch(self._epoch)
            self._data_iter = iter(self.data_loader)
            try:
                return next(self._data_iter)
            except StopIteration:
                raise TrainingError(
                    "the train loader yields no batches.",
                    key="dataloader.train",
                    hint="Check the dataset's length and that batch_size is not larger than it with drop_last.",
                ) from None

    def train(self, start_iter: int, max_iter: int) -> None:
        if isinstance(self.data_loader, torch.utils.data.DataLoader) and self.data_loader.num_workers > 0:
            user_init = self.data_loader.worker_init_fn
            if not isinstance(user_init, IgnoreStopSignals):  # a plain DataLoader's workers too: see loader_workers
                self.data_loader.worker_init_fn = IgnoreStopSignals(user_init)
        try:
            super().train(start_iter, max_iter)
        finally:
            close = getattr(self._data_iter, "close", None)
            if close is not None:
                close()  # a generator such as TrainLoader's: stops its worker processes
            elif self._data_iter is not None:
                shut_down_workers(self._data_iter)  # a plain DataLoader's iterator
            self._data_iter = None

    def test(self) -> dict[str, Any]:
        """Evaluate the model (its EMA when ``ema`` is set) on the test loader with the evaluator (``{}`` when
        the config has none); :attr:`latest_eval` becomes ``(index, flat results)``, ``index`` the index
        of the last iteration done (-1 before any; see :mod:`lazytrain.iterations`)."""
        if self.evaluator is None or self.test_loader is None:
            return {}
        model = self.eval_model()
        index = self._storage.iter if self._storage is not None else self.start_iter - 1
        results = inference_on_dataset(
            model,
            self.test_loader,
            self.evaluator,
            device=self.device,
            autocast=self.autocast(),
            where=f"evaluation at iteration {index + 1}" if index >= 0 else "evaluation",
        )
        if results:
            weights = " (EMA weights)" if self.ema is not None else ""
            logger.info("Evaluation at iteration %d%s:\n%s", index + 1, weights, format_results(results))
        self.latest_eval = (index, flatten_results(results))
        return results

    def eval_model(self) -> torch.nn.Module:
        """The module evaluation runs: the EMA of the weights when enabled, else the model without DDP."""
        if self.ema is not None:
            return self.ema.module
        return unwrap_model(self.model)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this run (a no-op without AMP); evaluation uses it too."""
        return autocast_context(self.device, self.amp_enabled, self.amp_dtype)

    def run_step(self) -> None:
        assert self.model.training, "the model was left in eval mode by a hook"
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        data_time = 0.0
        logged: dict[str, torch.Tensor] = {}  # detached loss terms, summed over micro-batches
        for micro in range(self.grad_accum):
            start = time.perf_counter()
            try:
                batch = self._next_batch()
            except LazytrainError:
                raise
            except Exception as e:
                raise UserCodeError.wrap(self.iter + 1, self._loader_name(), e) from e
            data_time += time.perf_counter() - start
            if self.device.type != "cpu":  # CPU batches are used as the loader made them
                batch = to_device(batch, self.device)
            with self._gradient_sync(last_micro_batch=micro == self.grad_accum - 1), self._autocast:
                try:
                    output = self.model(batch)
                except Exception as e:  # the model's frames are in the traceback; the batch's shapes go here
                    raise UserCodeError.wrap(
                        self.iter + 1, f"{self._model_name()}.forward", e, describe_batch(batch)
                    ) from e
                losses = as_loss_dict(output, self.model)
            loss = torch.stack(list(losses.values())).sum() if len(losses) > 1 else next(iter(losses.values()))
            if self.grad_accum > 1:
                loss = loss / self.grad_accum
            try:
                self.grad_scaler.scale(loss).backward()
            except Exception as e:
                raise UserCodeError.wrap(self.iter + 1, f"the backward pass of {self._model_name()}", e) from e
            terms = {"total_loss": loss.detach()}
            if len(losses) > 1:  # a single term is the total: logged once
                terms.update((name, value.detach() / self.grad_accum) for name, value in losses.items())
            for name, value in terms.items():
                logged[name] = logged[name] + value if name in logged else value

        # grad_norm is logged with or without clipping (a spike before a divergence shows); unscaled first, so it
        # is the norm of the true gradients under AMP too
        self.grad_scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.clip_max_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_max_norm, self.clip_norm_type)
        else:
            grad_norm = _total_norm([p.grad for p in params if p.grad is not None], self.clip_norm_type)
        self.storage.put_scalar("grad_norm", grad_norm)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

        storage = self.storage
        storage.put_scalar("data_time", data_time)
        storage.put_scalars(**logged, check_finite=True)  # type: ignore[arg-type]

    def _model_name(self) -> str:
        return type(unwrap_model(self.model)).__name__

    def _loader_name(self) -> str:
        dataset = getattr(self.data_loader, "dataset", None)
        loader = type(self.data_loader).__name__
        return (
            f"the train loader ({loader} of {type(dataset).__name__})"
            if dataset is not None
            else f"the train loader ({loader})"
        )

    def _gradient_sync(self, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        """DDP reduces gradients on the last micro-batch only; other models need no context."""
        if last_micro_batch or not hasattr(self.model, "no_sync"):
            return _NO_CONTEXT
        return self.model.no_sync()  # type: ignore[operator]


_NO_CONTEXT = contextlib.nullcontext()  # reusable: entering it does nothing


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside torch.compile's and DDP's wrappers (its state_dict keys have no ``_orig_mod.``
    or ``module.`` prefix): what checkpoints, evaluation and export use."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def amp_torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a ``train.amp.dtype`` setting ("bf16" / "fp16")."""
    if isinstance(name, torch.dtype):
        return name
    if name not in _AMP_DTYPES:
        raise ValueError(f"train.amp.dtype must be 'bf16' or 'fp16', got {name!r}.")
    return _AMP_DTYPES[name]


def autocast_context(
    device: torch.device, enabled: bool, dtype: str | torch.dtype
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``train.amp`` settings (``dtype`` "bf16" / "fp16")."""
    return torch.autocast(device_type=device.type, dtype=amp_torch_dtype(dtype), enabled=enabled)


def make_grad_scaler(device: torch.device, amp_enabled: bool, amp_dtype: str | torch.dtype) -> torch.amp.GradScaler:
    """The GradScaler of ``train.amp`` settings: enabled for fp16 only (bf16 has fp32's range)."""
    fp16 = amp_enabled and amp_torch_dtype(amp_dtype) is torch.float16
    return torch.amp.GradScaler(device.type, enabled=fp16)


def as_loss_dict(output: Any, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's train-mode output as ``{name: scalar tensor}``; anything else is a TrainingError."""
    if type(output) is dict and output and all(type(v) is torch.Tensor and v.dim() == 0 for v in output.values()):
        return output  # the common case, checked without copies
    if isinstance(output, torch.Tensor) and output.numel() == 1:
        return {"loss": output.reshape(())}
    model_name = type(unwrap_model(model)).__name__
    if isinstance(output, Mapping) and output:
        bad = {k: v for k, v in output.items() if not (isinstance(v, torch.Tensor) and v.numel() == 1)}
        if not bad:
            return {str(k): v.reshape(()) for k, v in output.items()}
        what = ", ".join(f"'{k}': {_describe(v)}" for k, v in bad.items())
        raise TrainingError(
            f"{model_name}.forward returned a dict whose values must be scalar loss tensors, but has {what}.",
            hint="In train mode return {'loss_name': scalar_tensor, ...} (they are summed) or one scalar tensor.",
        )
    raise TrainingError(
        f"{model_name}.forward returned {_describe(output)} in train mode; lazytrain needs a dict of scalar loss "
        "tensors or one scalar tensor.",
        hint="Compute the loss inside forward when self.training is True (see examples/).",
    )


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return "an empty dict" if not value else f"a dict with keys {list(value)}"
    return f"a {type(value).__name__}"


def _gives_hooks_their_view(trainer: Trainer) -> HookTrainer:
    return trainer  # mypy checks here that a Trainer has everything HookTrainer promises hooks


def _total_norm(grads: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    """The norm of all ``grads`` together, as ``clip_grad_norm_`` computes it, without changing them."""
    if not grads:
        return torch.zeros(())
    norms = [torch.linalg.vector_norm(g.detach(), norm_type) for g in grads]
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]), norm_type)
