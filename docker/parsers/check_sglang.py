"""sglang's own parsers judge the lab's sglang command lines (protocol: parser_check.py).

- `python3 -m sglang.launch_server ARGS` (the lab's sglang-srt): ARGS go through
  sglang.srt.server_args.prepare_server_args, as launch_server does: argparse, then ServerArgs'
  own checks of the values (it builds the whole ServerArgs; no model is opened).
- `sglang serve ARGS` (the lab's sglang, a diffusion server): what `sglang serve` runs for a
  diffusion model: the multimodal_gen serve parser's parse_known_args, then
  ServerArgs.from_cli_args, which turns the per-component flags it knows into settings, exits
  with "unrecognized arguments" on any other leftover, then builds ServerArgs, whose checks
  raise ValueError for a combination the model's pipeline cannot run (sglang knows the
  pipeline of a registered model by its id, no files needed).
Both: SystemExit and ValueError are sglang refusing the line (`rejected`). The one thing
tolerated (`unverified`): any other exception while ServerArgs is built after the parse. The
model's own config (model_index.json) is not on this machine and the hub is not asked, so
sglang falls back to a generic pipeline config, which can lack what a model-specific step
reads (seen: LTX-2.3's two-stage step reads `default_sigmas`, which the fallback lacks).

Run with build/parsers/sglang first on PYTHONPATH; HF_HUB_OFFLINE=1 keeps the hub out."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from parser_check import Unverified, main, refused


def _building(prog: str, build: Callable[[], object]) -> None:
    """Run what follows the parse: ValueError is sglang refusing the values, any other
    exception (SystemExit aside) a step that needs the model's files (see above)."""
    try:
        build()
    except ValueError as e:
        raise refused(prog, e) from e
    except Exception as e:  # reported as unverified, named
        raise Unverified(f"parsed; then {type(e).__name__}: {e}") from e


def check_srt(args: list[str]) -> None:
    from sglang.srt.server_args import prepare_server_args

    _building("sglang.launch_server", lambda: prepare_server_args(args))


def srt_parser() -> argparse.ArgumentParser:
    """The parser prepare_server_args builds (for the option list)."""
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="sglang.launch_server")
    ServerArgs.add_cli_args(parser)
    return parser


def diffusion_parser() -> argparse.ArgumentParser:
    """The parser `sglang serve` builds for a diffusion model."""
    from sglang.multimodal_gen.runtime.entrypoints.cli.serve import (
        add_multimodal_gen_serve_args,
    )

    parser = argparse.ArgumentParser(prog="sglang serve")
    add_multimodal_gen_serve_args(parser)
    return parser


def check_diffusion(args: list[str]) -> None:
    from sglang.multimodal_gen.runtime.server_args import ServerArgs

    parsed, rest = diffusion_parser().parse_known_args(args)
    # argv: which flags were given explicitly (sglang reads sys.argv when it is not passed);
    # default_args: what `sglang serve` passes
    _building(
        "sglang serve",
        lambda: ServerArgs.from_cli_args(
            parsed, rest, default_args={"warmup_mode": "server"}, argv=args
        ),
    )


def check(argv: list[str]) -> None:
    if argv[1:3] == ["-m", "sglang.launch_server"]:
        check_srt(argv[3:])
    elif argv[:2] == ["sglang", "serve"]:
        check_diffusion(argv[2:])
    else:
        raise ValueError(f"not an sglang server command line: {' '.join(argv[:3])} ...")


if __name__ == "__main__":
    sys.exit(main(check, lambda: {"sglang-srt": srt_parser(), "sglang": diffusion_parser()}))
