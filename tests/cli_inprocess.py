"""Run the ``litefly`` CLI in this process and capture what a user would see."""

from __future__ import annotations


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``litefly ARGS`` run through :func:`litefly.cli.main.main`."""
    from litefly.cli.main import main
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
