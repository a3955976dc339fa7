"""Command-line parsing helpers: tyro's errors as one line, and the flag names a config accepts."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import sys
import typing
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_BOX = re.compile(r"[│╭╮╰╯─┃━┏┓┗┛]+|-{3,}|^\s*[|+]|[|+]\s*$")


def parse_or_exit(parse: Callable[[], T]) -> T:
    """Run a tyro parse; a usage error becomes a one-line ReconError (``--help`` prints as tyro
    prints it and exits 0)."""
    from scenes.errors import ReconError

    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            return parse()
    except SystemExit as exc:
        if exc.code in (0, None):
            sys.stderr.write(buf.getvalue())
            raise
        raise ReconError(None, condense(buf.getvalue())) from None


def condense(text: str) -> str:
    """tyro's boxed error message as one line."""
    lines = []
    for raw in text.splitlines():
        line = _BOX.sub(" ", raw).strip()
        if not line or line.startswith(("usage:", "For full helptext", "Arguments are applied", "matter.")):
            continue
        if line.startswith(("Perhaps you meant", "Available subcommands")):
            break
        lines.append(line)
    if len(lines) > 1 and lines[1].startswith(lines[0]):
        lines = lines[1:]  # the box title repeats the first line
    out = " ".join(lines)
    return re.sub(r"\s+", " ", out).strip() or "invalid command line (see --help)"


def flag_names(cls: type, prefix: str = "") -> set[str]:
    """Every ``--flag`` tyro makes from the dataclass ``cls`` (nested fields dotted, underscores as
    hyphens, ``--no-x`` for booleans, short fields without their prefix)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        short = False
        while typing.get_origin(hint) is typing.Annotated:
            args = typing.get_args(hint)
            short = short or any(getattr(a, "prefix_name", None) is False for a in args[1:])
            hint = args[0]
        name = f.name.replace("_", "-")
        full = name if short else f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            out |= flag_names(hint, f"{prefix}{name}.")  # type: ignore[arg-type]
            continue
        out.add(f"--{full}")
        if hint is bool or (typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType"))
                            and bool in typing.get_args(hint)):
            parts = full.rsplit(".", 1)
            out.add("--" + (f"{parts[0]}.no-{parts[1]}" if len(parts) == 2 else f"no-{full}"))
    return out


def given_flags(args: list[str]) -> list[str]:
    """The ``--flag`` tokens of a command line (values after '=' dropped)."""
    return [a.split("=", 1)[0] for a in args if a.startswith("--") and a != "--"]


def describe(value: Any) -> str:
    return str(value) if not isinstance(value, str) else repr(value)


def check_host(host: str, flag: str) -> None:
    """An address to bind must be an IP literal or localhost (no name lookups: the viewer is local
    unless told otherwise, and a name that does not resolve would hang the bind)."""
    import ipaddress

    from scenes.errors import ReconError

    if host == "localhost":
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ReconError(None, f"{flag} {host!r} is not an IP address (use 127.0.0.1, 0.0.0.0 or ::1)") from None
