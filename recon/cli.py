"""The `recon` console script: the composition root above scenes < reconstruct < pruning < viewer.

Each subcommand is a typed dataclass turned into options by tyro. ``recon train`` is one tyro pass
over the two methods' configs (``recon train splat ...`` / ``recon train nerf ...``; ``--method X``
picks the same subcommand and no method means splat). Bad input raises ``ReconError``: printed as
one line on stderr, exit code 1; ``--debug`` anywhere shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable


def main(argv: list[str] | None = None) -> int:
    # OpenMP workers (torch's and numba's) busy-wait between parallel regions by default; on a
    # small shared CPU that costs several times the work itself. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _setup_logging(debug)
    if args and args[0] == "train":
        from recon.train import parse_train, train

        return guard(lambda: train(parse_train(args[1:])), debug)
    if args and args[0] == "batch":  # its train / --compress.X / --export.X options pass through to those steps
        from recon.commands import batch_main

        return guard(lambda: batch_main(args[1:]), debug)
    from recon.commands import COMMANDS
    from recon.options import parse_or_exit

    return guard(lambda: parse_or_exit(lambda: _parse_command(COMMANDS, args)).run(), debug)


def _parse_command(commands: dict, args: list[str]):
    import tyro

    return tyro.extras.subcommand_cli_from_dict(
        commands, args=args, prog="recon",
        description="Sparse-view 3D reconstruction (add --debug anywhere to see tracebacks).",
    )


def guard(run: Callable[[], int | None], debug: bool) -> int:
    """Run a command: ReconError becomes one line on stderr and exit 1 (traceback with --debug);
    an interrupted training run says where it stopped and how to continue."""
    from reconstruct.loop import Interrupted
    from scenes.errors import ReconError

    try:
        code = run()
    except ReconError as err:
        if debug:
            raise
        print(f"recon: error: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        where = getattr(err, "run_dir", None)
        hint = f"; resume with: recon train --resume {where}" if err.saved and where else ""
        print(f"recon: interrupted at step {err.step}{' (checkpoint written)' if err.saved else ''}{hint}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


class _StderrLines(logging.Handler):
    """Log records as 'recon: message' lines on the current sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"recon: {record.getMessage()}", file=sys.stderr)


def _setup_logging(debug: bool) -> None:
    """Library modules log; the CLI shows their messages as 'recon: ...' lines on stderr."""
    for name in ("scenes", "reconstruct", "pruning", "viewer", "recon"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, _StderrLines) for h in logger.handlers):
            logger.addHandler(_StderrLines())
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
        logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
