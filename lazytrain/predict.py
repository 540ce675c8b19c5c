"""``lazytrain predict``: run a trained model over the scans of a split and hand each batch's outputs to the
config's prediction writer, which turns them into files (the flagship: a benchmark submission folder)."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Protocol, runtime_checkable

from omegaconf import DictConfig, OmegaConf, open_dict

from .checkpoint import iterations_done, load_inference_weights
from .config import instantiate
from .engine.build import build_loader, build_model, resolve_device, seed_everything
from .engine.logger import setup_logger
from .engine.memory import inference_autocast
from .engine.settings import check_required
from .errors import ConfigError
from .evaluation import inference_on_dataset

__all__ = ["PredictionWriter", "predict_main"]

logger = logging.getLogger(__name__)


@runtime_checkable
class PredictionWriter(Protocol):
    """What ``predict.writer`` builds: ``begin(out_dir, pictures=...)`` once (``pictures``: ``--png``, also
    write pictures), ``write(batch, outputs)`` per batch (``outputs``: the eval-mode model's), ``end()`` the
    summary (name → value; shown to the user, e.g. the folder and what to do with it)."""

    def begin(self, out_dir: str, *, pictures: bool = False) -> None: ...

    def write(self, batch: Any, outputs: Any) -> None: ...

    def end(self) -> dict[str, Any]: ...


class _WriterAsEvaluator:
    """A writer seen as an evaluator, so the inference loop (eval mode, no grad, progress) is the one
    evaluation runs."""

    def __init__(self, writer: PredictionWriter) -> None:
        self.writer = writer

    def reset(self) -> None:
        pass

    def process(self, batch: Any, outputs: Any) -> None:
        self.writer.write(batch, outputs)

    def evaluate(self) -> dict[str, Any]:
        return {}


_HINT = (
    "Add to the config: predict = dict(split='test', writer=L(MyWriter)(...)) and dataloader.predict = "
    "L(build_test_loader)(dataset=L(MyDataset)(split='${predict.split}'), batch_size=...)."
)


def predict_main(
    cfg: DictConfig,
    weights: str,
    split: Optional[str] = None,
    out_dir: Optional[str] = None,
    pictures: bool = False,
    use_ema: bool = True,
) -> dict[str, Any]:
    """Predict with ``weights`` (their EMA when there is one and ``use_ema``) over ``dataloader.predict``
    (``split`` sets ``predict.split`` first, which that loader's config reads) and write with
    ``predict.writer`` into ``out_dir`` (default ``<train.output_dir>/predictions/<split>``). Returns the
    writer's summary. One process."""
    check_required(cfg, ("model",))
    if cfg.get("predict") is None or OmegaConf.select(cfg, "predict.writer", default=None) is None:
        raise ConfigError("this config has no prediction writer.", key="predict.writer", hint=_HINT)
    if OmegaConf.select(cfg, "dataloader.predict", default=None) is None:
        raise ConfigError("this config has no loader to predict with.", key="dataloader.predict", hint=_HINT)
    if split is not None:
        with open_dict(cfg):
            cfg.predict.split = split
    split = str(cfg.predict.get("split", "predict"))
    out_dir = out_dir or os.path.join(cfg.train.output_dir, "predictions", split)
    setup_logger(None)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    device = resolve_device(cfg.train.device)
    model = build_model(cfg, device)
    extra = load_inference_weights(model, weights, use_ema)
    loader = build_loader(cfg.dataloader.predict, "dataloader.predict", device)
    writer = instantiate(cfg.predict.writer, key="predict.writer")
    if not isinstance(writer, PredictionWriter):
        raise ConfigError(
            f"predict.writer built a {type(writer).__name__}, which lacks begin(out_dir, pictures=...), "
            "write(batch, outputs) or end().",
            key="predict.writer",
        )
    done = iterations_done(extra)
    logger.info(
        "Predicting split %r with %s (%s, %s weights) into %s",
        split,
        weights,
        f"iteration {done}" if done is not None else "no iteration recorded",
        extra["weights"],
        os.path.abspath(out_dir),
    )
    writer.begin(out_dir, pictures=pictures)
    autocast = inference_autocast(model, cfg, device)  # train.amp, or inside train.amp.modules
    inference_on_dataset(model, loader, _WriterAsEvaluator(writer), device=device, autocast=autocast, what="Prediction")
    return writer.end()
