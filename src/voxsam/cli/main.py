"""Entry point of the `voxsam` command.

Exit codes (docs/reliability.md): 0 the command did everything asked; 1 `eval` finished but some targets
failed (listed); 2 a user or environment error (`error: <one line>` on stderr, no traceback: any
`VoxsamError`, a usage error, an OSError such as a full disk); 130 interrupted by Ctrl-C (SIGINT); 143
terminated by SIGTERM. Both signals print `interrupted` and let every `finally` run, so temporary files are
removed.
"""
from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

import typer

from voxsam.cli import demo_cmd, edit_cmd, engines_cmd, eval_cmd, io_cmds, segment_cmd, serve_cmd, train_cmd

app = typer.Typer(
    name="voxsam",
    help="Promptable 3D segmentation of CT and MRI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
io_cmds.register(app)
segment_cmd.register(app)
engines_cmd.register(app)
edit_cmd.register(app)
eval_cmd.register(app)
demo_cmd.register(app)
train_cmd.register(app)
serve_cmd.register(app)

EXIT_ERROR = 2
EXIT_SIGINT = 130  # 128 + SIGINT
EXIT_SIGTERM = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives, so cleanup runs as for Ctrl-C."""


_received: list[int] = []


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated()


def _install_sigterm() -> Any:
    """Route SIGTERM through `Terminated` (main thread only; a handler set by someone else is left alone)."""
    try:
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            return None
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main thread: signals stay as they are
        return None


def _interrupted() -> None:
    terminated = bool(_received) and _received[-1] == signal.SIGTERM
    print("interrupted (SIGTERM)" if terminated else "interrupted", file=sys.stderr)
    sys.exit(EXIT_SIGTERM if terminated else EXIT_SIGINT)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors print `error: ...` and exit 2 without a traceback."""
    from voxsam.errors import VoxsamError

    _received.clear()
    previous = _install_sigterm()
    try:
        try:
            code = app(args=argv, standalone_mode=False)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    except VoxsamError as exc:
        _error(str(exc))
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit:
        raise
    except OSError as exc:  # the environment, not voxsam: a full disk, a folder we may not write, ...
        _error(_os_error_line(exc))
    except Exception as exc:  # click usage errors arrive here when standalone_mode is off
        click_exception, abort = _click_exception_types()
        if isinstance(exc, click_exception):
            exc.show()  # type: ignore[attr-defined]  # a click ClickException
            sys.exit(EXIT_ERROR)
        if isinstance(exc, abort):
            if isinstance(exc.__context__, KeyboardInterrupt):  # older click turns Ctrl-C into Abort
                _interrupted()
            sys.exit(1)
        raise
    # typer returns (instead of raising) the code of an Exit: 130 for Ctrl-C, others from `raise typer.Exit(n)`
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        if code == EXIT_SIGINT:
            _interrupted()
        sys.exit(code)


def _error(line: str) -> None:
    print(f"error: {' '.join(line.split())}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError that escaped a command: cause first, then the file."""
    import errno

    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"the disk is full (no space left on device){where}"
    return f"{exc.strerror or type(exc).__name__}{where}"


def _click_exception_types() -> tuple[type, type]:
    """The usage-error and abort classes typer raises: its vendored click copy (typer >= 0.22), else click.

    The copy comes first: click itself may be installed beside it (uvicorn needs it) without being what
    typer raises."""
    try:
        from typer import Abort
        from typer._click.exceptions import ClickException
    except ImportError:
        from click.exceptions import Abort, ClickException  # type: ignore[assignment]
    return ClickException, Abort


if __name__ == "__main__":  # pragma: no cover
    main()
