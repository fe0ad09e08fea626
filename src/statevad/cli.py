"""The ``statevad`` command. Each subcommand has one ``_add_<name>`` (arguments) and one ``_run_<name>``
(handler) function; handlers import their stage lazily so that ``statevad --help`` stays fast.

Bad input surfaces as :class:`statevad.errors.UserError`: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from statevad import __version__
from statevad.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _not_implemented(name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        print(f"statevad {name}: not implemented yet", file=sys.stderr)
        return 2

    return run


# --------------------------------------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("info", help="describe a dataset root, a video or a frame folder")
    p.add_argument("path", help="dataset root, video file or frame folder")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    return _run_info


def _run_info(args: argparse.Namespace) -> int:
    from statevad.datasets import describe

    return describe(args.path, as_json=args.json)


# ------------------------------------------------------------------------------------------ prepare
def _add_prepare(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("prepare", help="boxes, optical flow and cubes into a work directory")
    p.add_argument("--root", required=True, help="dataset root (layout detected automatically)")
    p.add_argument("--work", required=True, help="work directory to write (resumable)")
    p.set_defaults(_parser=p)
    return _not_implemented("prepare")


# -------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("train", help="train the STATE network on the prepared training cubes")
    p.add_argument("--work", required=True)
    return _not_implemented("train")


# --------------------------------------------------------------------------------------------- test
def _add_test(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("test", help="score the prepared test cubes and evaluate (AUROC)")
    p.add_argument("--work", required=True)
    return _not_implemented("test")


# -------------------------------------------------------------------------------------------- score
def _add_score(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("score", help="score a video, frame folder or live stream with a trained model")
    p.add_argument("input")
    return _not_implemented("score")


# --------------------------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("demo", help="the main job on a bundled sample: train, score, report")
    p.add_argument("--out", default="statevad-demo", help="output folder (default: ./statevad-demo)")
    return _not_implemented("demo")


# --------------------------------------------------------------------------------- import-original
def _add_import_original(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("import-original", help="convert a checkpoint of the original STATE code")
    p.add_argument("ckpt")
    p.add_argument("--out", required=True)
    return _not_implemented("import-original")


_COMMANDS: list[Callable[[argparse._SubParsersAction], Handler]] = [
    _add_info,
    _add_prepare,
    _add_train,
    _add_test,
    _add_score,
    _add_demo,
    _add_import_original,
]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="statevad",
        description="STATE video anomaly detection: prepare -> train -> test, or score footage.",
    )
    parser.add_argument("--version", action="version", version=f"statevad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Handler] = {}
    for add in _COMMANDS:
        before = set(sub.choices)
        handler = add(sub)
        for name in set(sub.choices) - before:
            handlers[name] = handler
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(handlers[args.command](args) or 0)
    except UserError as exc:
        print(f"statevad {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"statevad {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
