"""The `lazytrain` command. Imports stay inside the subcommands so `lazytrain --help` starts fast."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Optional

__all__ = ["main"]


class _Help(argparse.RawDescriptionHelpFormatter):
    """--help keeps the example's line breaks and shows an option's default where it tells something: not for
    a default of None or False (an option not given, a flag not set), nor where the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        help_text = action.help or ""
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or "default" in help_text.lower():
            return help_text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{help_text} (default: %(default)s)"
        return help_text


def _launch_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("processes (see README: From a laptop to many GPUs)")
    g.add_argument("--num-procs", type=int, default=1, help="processes on this machine (one per GPU); 1: this one")
    g.add_argument("--num-machines", type=int, default=1, help="machines taking part")
    g.add_argument("--machine-rank", type=int, default=0, help="this machine's rank, 0 .. num-machines - 1")
    g.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 (auto: a free local port)")
    g.add_argument(
        "--dist-timeout", type=float, default=1800.0, metavar="SECONDS", help="process-group timeout for collectives"
    )


def _launch(fn: Callable[..., Any], args: argparse.Namespace, *fn_args: Any) -> None:
    from datetime import timedelta

    from .launch import launch

    launch(
        fn,
        args.num_procs,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=fn_args,
        timeout=timedelta(seconds=args.dist_timeout),
    )


def _config_args(p: argparse.ArgumentParser, example: str = "train.max_iter=100") -> None:
    p.add_argument("config", help="config file (.py, or .yaml saved by lazytrain)")
    # an example that changes what this command does: train.max_iter means nothing to eval or predict
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"config overrides, e.g. {example}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="lazytrain",
        description="Train PyTorch models from plain Python configs.",
        epilog="Run `lazytrain COMMAND --help` for the options of a command, e.g. `lazytrain train --help`.",
    )
    parser.add_argument("--version", action="version", version=f"lazytrain {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=os.environ.get("LAZYTRAIN_TRACEBACK", "") not in ("", "0"),
        help="show the full Python traceback with any error (or set LAZYTRAIN_TRACEBACK=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="train (and evaluate) the model a config describes",
        formatter_class=_Help,
        epilog="example:\n  lazytrain train configs/kitti_seg.py train.max_iter=1000 --num-procs 2",
    )
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last_checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an output_dir that holds a run: delete its checkpoints, metrics and events first",
    )
    p.add_argument("--eval-only", action="store_true", help="only evaluate (the resumed or init_checkpoint weights)")
    p.add_argument("--output-dir", help="where logs, metrics and checkpoints go (train.output_dir)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="in seconds: build, 2 steps, 2 test batches, checkpoint round trip, export check; then clean up",
    )
    _launch_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint; print and save the metrics",
        formatter_class=_Help,
        epilog="example:\n  lazytrain eval configs/kitti_seg.py --weights output/kitti_seg/checkpoints/model_final.pth",
    )
    _config_args(p, example="dataset.root=/data/kitti")
    p.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint file (.pth)")
    p.add_argument(
        "--output-dir",
        help="results (metrics.jsonl, config.yaml, log.txt) go to its eval/ (default: the eval/ of the run the "
        "weights are in, else of train.output_dir)",
    )
    p.add_argument("--no-ema", action="store_true", help="evaluate the trained weights, not their EMA (train.ema)")
    _launch_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "export",
        help="export the model to ONNX and check it against torch with onnxruntime",
        formatter_class=_Help,
        epilog="example:\n  lazytrain export configs/kitti_seg.py "
        "--weights output/kitti_seg/checkpoints/model_final.pth",
    )
    _config_args(p, example="dataset.root=/data/kitti")
    p.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint file (.pth), CUDA-trained ones too")
    p.add_argument(
        "-o", "--output", metavar="MODEL.onnx", help="where to write (default: <train.output_dir>/model.onnx)"
    )
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--no-ema", action="store_true", help="export the trained weights, not their EMA (train.ema)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "analyze",
        help="parameters, FLOPs, activations, latency and peak memory, without training",
        formatter_class=_Help,
        epilog="example:\n  lazytrain analyze configs/kitti_seg.py --depth 3",
    )
    _config_args(p, example="dataloader.test.batch_size=1")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint file (.pth); default: freshly initialised weights")
    p.add_argument("--runs", type=int, default=10, metavar="N", help="timed forward passes, after 2 warm-up")
    p.add_argument("--depth", type=int, default=2, metavar="N", help="module levels in the table (0: the model only)")
    p.add_argument("--json", metavar="PATH", help="also write the numbers to PATH as JSON")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "predict",
        help="write the model's predictions for a split as files (flagship: a SemanticKITTI submission)",
        formatter_class=_Help,
        epilog="example:\n  lazytrain predict configs/kitti_seg.py --weights output/kitti_seg/checkpoints/"
        "model_final.pth --split test",
    )
    _config_args(p, example="dataset.root=/data/kitti")
    p.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint file (.pth)")
    p.add_argument("--split", help="the split to predict (sets predict.split; default: the config's)")
    p.add_argument("--out", metavar="DIR", help="where to write (default: <train.output_dir>/predictions/<split>)")
    p.add_argument("--png", action="store_true", help="also write pictures of the predictions as PNG files")
    p.add_argument("--no-ema", action="store_true", help="predict with the trained weights, not their EMA")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "hooks",
        help="print the trainer's hook list, in order, with periods",
        formatter_class=_Help,
        epilog="example:\n  lazytrain hooks configs/kitti_seg.py train.eval_period=100",
    )
    _config_args(p)
    p.set_defaults(func=cmd_hooks)

    p = sub.add_parser(
        "config",
        help="print the resolved config as YAML",
        formatter_class=_Help,
        epilog="example:\n  lazytrain config configs/kitti_seg.py optimizer.lr=0.01 --save exp.yaml",
    )
    _config_args(p)
    p.add_argument("--save", metavar="OUT.yaml", help="also save the config (loadable with LazyConfig.load)")
    p.add_argument(
        "--where",
        nargs="?",
        const="",
        metavar="KEY",
        help="where KEY's value was set (file:line, command line, default, interpolation); "
        "without KEY: every key the overrides changed",
    )
    p.set_defaults(func=cmd_config)
    return parser


def load_config(args: argparse.Namespace) -> Any:
    """The config of a command: the file, the ``train`` defaults, the overrides, then ``--output-dir``."""
    from .engine.settings import load_run_config

    return load_run_config(args.config, args.overrides, getattr(args, "output_dir", None))


def cmd_train(args: argparse.Namespace) -> int:
    if args.dry_run:
        import tempfile

        from .engine.dry_run import dry_run_main, process_started_at

        cfg = load_config(args)
        if not args.output_dir:  # a folder of its own, the same for every rank, deleted afterwards
            cfg.train.output_dir = tempfile.mkdtemp(prefix="lazytrain-dry-run-")
        _launch(dry_run_main, args, cfg, bool(args.output_dir), process_started_at(), args.overwrite)
        return 0
    from .engine.run import train_main

    _launch(train_main, args, load_config(args), args.resume, args.eval_only, args.overwrite)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.eval_record import eval_destination
    from .engine.run import evaluate_main

    cfg = load_config(args)
    destination = eval_destination(args.weights, cfg.train.output_dir, explicit_output_dir=bool(args.output_dir))
    _launch(evaluate_main, args, cfg, args.weights, not args.no_ema, destination)
    print(f"results: {destination.metrics}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import logging

    from .engine.logger import FILE_ONLY, setup_logger
    from .export import export_onnx

    cfg = load_config(args)
    output = args.output or os.path.join(cfg.train.output_dir, "model.onnx")
    # the stages and which weights were loaded (the EMA's, say) on the terminal; with the result, in the
    # log.txt beside the model (the run's, by default): what was exported stays on record
    setup_logger(os.path.dirname(os.path.abspath(output)))
    report = export_onnx(cfg, args.weights, output, opset=args.opset, check=not args.no_check, use_ema=not args.no_ema)
    if report["checked"]:
        result = (
            f"wrote {output} (opset {report['opset']}): matches torch on {len(report['batches'])} batches, "
            f"max abs diff {report['max_abs_diff']:.2e}, argmax agreement {report['argmax_agreement']:.4f}"
        )
    else:
        result = f"wrote {output} (opset {report['opset']}), not checked (--no-check)"
    for line in (result, f"report: {report['report']}"):
        print(line)  # plain, the command's answer; log.txt gets it in the log's format
        logging.getLogger("lazytrain.export").info(line, extra=FILE_ONLY)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    import json

    from .analyze import analyze_model, format_report

    report = analyze_model(load_config(args), args.weights, runs=args.runs, depth=args.depth)
    print(format_report(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_main

    summary = predict_main(load_config(args), args.weights, args.split, args.out, args.png, not args.no_ema)
    width = max((len(str(k)) for k in summary), default=0)
    print("predictions written:")
    for key, value in summary.items():
        print(f"  {key:<{width}}  {value}")
    return 0


def cmd_hooks(args: argparse.Namespace) -> int:
    from .engine.hook_list import build_hooks
    from .engine.run_settings import run_settings

    cfg = load_config(args)
    for i, hook in enumerate(build_hooks(cfg)):
        print(f"{i:>2}  {hook!r}")
    settings = run_settings(cfg)
    width = max(len(key) for key, _ in settings)
    print("settings (no hooks, but they change training):")
    for key, what in settings:
        print(f"    {key:<{width}}  {what}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import LazyConfig

    cfg = load_config(args)
    if args.where is not None:
        return _print_where(cfg, args.where)
    sys.stdout.write(LazyConfig.to_yaml(cfg, resolve=True))
    if args.save:
        LazyConfig.save(cfg, args.save)
        print(f"saved {args.save}", file=sys.stderr)
    return 0


def _print_where(cfg: Any, key: str) -> int:
    from omegaconf import OmegaConf

    from .config.provenance import origin, overridden_keys
    from .engine.settings import TRAIN_DEFAULTS
    from .errors import ConfigError, did_you_mean

    keys = [key] if key else sorted(overridden_keys(cfg))
    if not keys:
        print("no key was changed by an override")
    for k in keys:
        if OmegaConf.select(cfg, k, default="<missing>", throw_on_missing=False) == "<missing>":
            from .config.lazy_config import flat_keys

            raise ConfigError("no such config key.", key=k, hint=did_you_mean(k, list(flat_keys(cfg))))
        value = OmegaConf.select(cfg, k, throw_on_missing=False)
        print(f"{k} = {_as_source(value, k)}: {origin(cfg, k, TRAIN_DEFAULTS)}")
    return 0


def _as_source(value: Any, key: str) -> str:
    """A value as the config file writes it: ``L(toyproj.model.MLPClassifier)(hidden=32)`` for a call."""
    from omegaconf import OmegaConf

    from .config.python_writer import value_to_python
    from .errors import ConfigError

    if not OmegaConf.is_config(value):
        return repr(value)
    try:
        return value_to_python(value, key)
    except ConfigError:  # a value without a source form (an object from a cloudpickle file)
        return "(a node)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --traceback is accepted anywhere on the line, not only before the command
    show_traceback = "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]
    # `--where KEY=VALUE`: an override after a --where without a key (a key has no '=')
    argv = ["--where=" if a == "--where" and "=" in b else a for a, b in zip(argv, [*argv[1:], ""])]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may stand before or after options: collect the KEY=VALUE words argparse left over
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and not hasattr(args, "overrides"):
        parser.error(f"{args.command} takes no KEY=VALUE overrides: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return run_command(args.func, args, show_traceback=show_traceback or args.traceback)


def run_command(func: Callable[[argparse.Namespace], int], args: Any, show_traceback: bool) -> int:
    """Run a subcommand; lazytrain errors become one paragraph on stderr and their exit code."""
    from .errors import Interrupted, LazytrainError

    try:
        return func(args)
    except LazytrainError as e:
        if show_traceback:
            traceback.print_exc()
        if e.details and (show_traceback or e.show_details):
            print(e.details, file=sys.stderr)  # e.g. the traceback of user code, or of a worker
        print(f"error: {e}", file=sys.stderr)
        if "lazytrain.engine.logger" in sys.modules:  # else no log.txt was opened (and torch stays unloaded)
            sys.modules["lazytrain.engine.logger"].log_closing_error(e)
        return e.exit_code
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
