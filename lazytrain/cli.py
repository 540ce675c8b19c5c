"""The `lazytrain` command. Imports stay inside the subcommands so `lazytrain --help` starts fast."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, Callable, Optional

__all__ = ["main"]


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="config file (.py, or .yaml saved by lazytrain)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.max_iter=100")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lazytrain",
        description="Train PyTorch models from plain Python configs.",
        epilog="Run `lazytrain COMMAND --help` for the options of a command.",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=os.environ.get("LAZYTRAIN_TRACEBACK", "") not in ("", "0"),
        help="show the full Python traceback with any error (or set LAZYTRAIN_TRACEBACK=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("config", help="print the resolved config as YAML")
    _config_args(p)
    p.add_argument("--save", metavar="OUT.yaml", help="also save the config (loadable with LazyConfig.load)")
    p.set_defaults(func=cmd_config)
    return parser


def cmd_config(args: argparse.Namespace) -> int:
    from .config import LazyConfig

    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), args.overrides)
    sys.stdout.write(LazyConfig.to_yaml(cfg, resolve=True))
    if args.save:
        LazyConfig.save(cfg, args.save)
        print(f"saved {args.save}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --traceback is accepted anywhere on the line, not only before the command
    show_traceback = "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]
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
    from .errors import LazytrainError

    try:
        return func(args)
    except LazytrainError as e:
        if show_traceback:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
