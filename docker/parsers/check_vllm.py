"""vLLM's own `vllm serve` judges the lab's vllm command lines (protocol: parser_check.py).

Each line runs through vllm.entrypoints.cli.main.main, as the `vllm` console script does, with
sys.argv set to it and the serve subcommand's start (the engine and the HTTP server) replaced by
a no-op: vLLM's parser (its config-file and dotted-option handling included) and the serve
subcommand's checks that run before loading (validate_parsed_serve_args) are vLLM's own. Those
checks raise instead of exiting (e.g. "--enable-auto-tool-choice requires --tool-call-parser");
`vllm serve` ends on them before loading anything, so they count as rejections too.

Run with build/parsers/vllm first on PYTHONPATH and VLLM_TARGET_DEVICE=cpu (no CUDA here)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from parser_check import main, refused


def _no_engine(args: argparse.Namespace) -> None:
    """What `vllm serve` would start, after its parse and checks: nothing, here."""


def _refusing(validate: Callable[[Any, argparse.Namespace], None]) -> Any:
    """The serve subcommand's checks raise (TypeError, ValueError) where argparse exits: as
    `vllm serve` ends on either before loading anything, both are the CLI refusing the line."""

    def checked(self: Any, args: argparse.Namespace) -> None:
        try:
            validate(self, args)
        except (TypeError, ValueError) as e:
            raise refused("vllm serve", e) from e

    return checked


def check(argv: list[str]) -> None:
    if argv[:2] != ["vllm", "serve"]:
        raise ValueError(f"not a `vllm serve` command line: {' '.join(argv[:3])} ...")
    if "--omni" in argv:  # vLLM hands these to the vllm-omni package, which is not here
        raise ValueError("--omni lines are vllm-omni's; this environment has only vllm")
    import vllm.entrypoints.cli.main
    import vllm.entrypoints.cli.serve

    serve = vllm.entrypoints.cli.serve.ServeSubcommand
    if not hasattr(serve, "_lab_checked"):  # once: the patches stay for the next lines
        serve.cmd = staticmethod(_no_engine)
        serve.validate = _refusing(serve.validate)
        serve._lab_checked = True
    saved = sys.argv
    sys.argv = list(argv)
    try:
        vllm.entrypoints.cli.main.main()
    finally:
        sys.argv = saved


def serve_parser() -> argparse.ArgumentParser:
    """The options of `vllm serve`: its subcommand's parser is built by make_arg_parser."""
    from vllm.entrypoints.common.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser: argparse.ArgumentParser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    return parser


if __name__ == "__main__":
    sys.exit(main(check, lambda: {"vllm": serve_parser()}))
