"""Entry point of the `voxsam` command. Every `VoxsamError` becomes one line on stderr and exit code 2."""
from __future__ import annotations

import sys

import typer

from voxsam.cli import demo_cmd, edit_cmd, engines_cmd, eval_cmd, io_cmds, segment_cmd, train_cmd

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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors print `error: ...` and exit 2 without a traceback."""
    from voxsam.errors import VoxsamError

    try:
        app(args=argv, standalone_mode=False)
    except VoxsamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here when standalone_mode is off
        click_exception, abort = _click_exception_types()
        if isinstance(exc, click_exception):
            exc.show()  # type: ignore[attr-defined]  # a click ClickException
            sys.exit(2)
        if isinstance(exc, abort):
            sys.exit(1)
        raise


def _click_exception_types() -> tuple[type, type]:
    """Click's usage-error and abort classes: from click, or from the copy newer typer releases vendor."""
    try:
        from click.exceptions import Abort, ClickException
    except ImportError:  # typer >= 0.22 ships click as typer._click
        from typer import Abort
        from typer._click.exceptions import ClickException
    return ClickException, Abort


if __name__ == "__main__":  # pragma: no cover
    main()
