"""The `recon` console script: one tyro subcommand per job.

Each subcommand is a dataclass owned by the package that implements it, with a ``run()`` method
that imports the heavy modules lazily (so ``recon --help`` stays fast). Bad input raises
``ReconError``: printed as one line on stderr, exit code 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    # OpenMP workers (torch's and numba's) busy-wait between parallel regions by default; on a
    # small shared CPU that costs several times the work itself. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import tyro

    from pruning.commands import CompressCommand, ExportCommand
    from reconstruct.commands import BenchCommand, EvalCommand, TrainCommand
    from scenes.commands import InfoCommand
    from viewer.commands import ViewCommand

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if args and args[0] == "train":
        # train resolves its defaults in two stages (preset / --config / --resume, then flags).
        from reconstruct.run_train import main as train_main

        return _guard(lambda: train_main(args[1:]), debug)
    commands = {
        "train": TrainCommand,
        "eval": EvalCommand,
        "view": ViewCommand,
        "compress": CompressCommand,
        "export": ExportCommand,
        "info": InfoCommand,
        "bench": BenchCommand,
    }
    command = tyro.extras.subcommand_cli_from_dict(
        commands,
        args=args,
        prog="recon",
        description="Sparse-view 3D reconstruction (add --debug anywhere to see tracebacks).",
    )
    return _guard(command.run, debug)


def _guard(run, debug: bool) -> int:
    """Run a command: ReconError becomes one line on stderr and exit 1 (traceback with --debug)."""
    from scenes.errors import ReconError

    try:
        code = run()
    except ReconError as err:
        if debug:
            raise
        print(f"recon: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def not_built(part: str) -> int:
    """For subcommands whose implementation has not landed: say so, exit 2, do nothing."""
    print(f"recon: {part} is not built yet in this version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
