"""Option groups for the CLI: :func:`stack_options` (several click options as one decorator) and
the engine-envelope options shared by ``litefly bench``, ``build``, ``gen`` and ``synth``, and
``--merge/--no-merge`` (:func:`merge_option`), shared by every command that builds or runs an engine.

Each overrides the network's ``engine:`` setting; another value is another engine (another
envelope hash, so another bitstream). :func:`litefly.hw.spec.EngineEnvelope.for_network`
takes them as they come and checks them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from litefly.config import FRAME_WORD_BEATS, MAX_FRAME_KIB, WINDOW_GENERATORS
from litefly.hw.spec import DEFAULT_FRAME_KIB

__all__ = ["Decorator", "ENVELOPE_KEYS", "envelope_options", "merge_option", "stack_options"]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def stack_options(*opts: Decorator) -> Decorator:
    """The click options ``opts`` as one decorator (in ``--help`` in the order given)."""
    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            f = opt(f)
        return f
    return wrap


ENVELOPE_KEYS = ("multipliers", "macs_per_dsp", "stream_bits", "window_generators", "frame_kib", "row_pairs",
                 "row_quads", "frame_word_beats", "row_octets")


def envelope_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--multipliers``, ``--macs-per-dsp``, ``--stream-bits``, ``--window-generators``,
    ``--frame-kib``, ``--row-pairs/--no-row-pairs``, ``--row-quads/--no-row-quads``, ``--row-octets/--no-row-octets`` and ``--frame-word-beats`` (each default: the network's); the command receives them as one ``engine`` dict
    (keys :data:`ENVELOPE_KEYS`, ``None`` where not given), the keyword arguments of
    :meth:`~litefly.hw.spec.EngineEnvelope.for_network` and ``run_bench``."""
    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        engine = {k: kwargs.pop(k) for k in ENVELOPE_KEYS}
        return f(*args, engine=engine, **kwargs)

    return stack_options(
        click.option("--multipliers", type=int, default=None, metavar="N",
                     help="Lanes (MAC units) of the engine; default: the network's engine setting. Another "
                          "value is another engine (another hash)."),
        click.option("--macs-per-dsp", type=click.IntRange(1, 2), default=None,
                     help="2: two lanes share each DSP multiply (int8 packing); default: the network's engine "
                          "setting."),
        click.option("--stream-bits", type=click.Choice(["32", "64", "128"]), default=None,
                     callback=lambda _c, _p, v: None if v is None else int(v),
                     help="AXI-Stream width (and frame/window width: E = bits/8 channels per beat); default: "
                          "the network's engine setting."),
        click.option("--window-generators", type=click.Choice([str(g) for g in WINDOW_GENERATORS]), default=None,
                     callback=lambda _c, _p, v: None if v is None else int(v),
                     help="Window generators forming a batch's im2col columns in parallel (each with its own "
                          "frame-buffer copy); default: the network's engine setting, else 1."),
        click.option("--frame-kib", type=click.IntRange(1, MAX_FRAME_KIB), default=None, metavar="KIB",
                     help="Frame buffer size in KiB: a pass takes as many images as it holds (or, where its windows "
                          "allow, streams the whole batch, or an image larger than it, through it as a ring), so "
                          "a larger one means fewer passes; default: the network's engine setting, else the largest layer "
                          f"input of one image (at least {DEFAULT_FRAME_KIB} KiB)."),
        click.option("--row-pairs/--no-row-pairs", default=None,
                     help="With --macs-per-dsp 2: each DSP multiply computes two rows of a DeBut block for one "
                          "lane (two weights, one activation: one DSP per lane, half the issue cycles on factors "
                          "with r even and s >= 2) instead of one row for two lanes; default: the network's "
                          "engine setting."),
        click.option("--row-quads/--no-row-quads", default=None,
                     help="With row pairs: two DSPs per lane, each computing two rows, so a lane computes four rows "
                          "of a DeBut block an issue (a quarter of the issue cycles on factors with r divisible by 4 "
                          "and s >= 4; half on the other paired factors, whose second DSP idles); implies "
                          "--row-pairs; default: the network's engine setting."),
        click.option("--row-octets/--no-row-octets", default=None,
                     help="With row quads: four DSPs per lane, so a lane computes eight rows of a DeBut block an "
                          "issue (an eighth of the issue cycles on factors with r divisible by 8 and s >= 8; quads "
                          "and pairs as before on the others, two DSPs idle); needs eight weights a stream beat; "
                          "implies --row-quads; default: the network's engine setting."),
        click.option("--frame-word-beats", type=click.Choice([str(b) for b in FRAME_WORD_BEATS]), default=None,
                     callback=lambda _c, _p, v: None if v is None else int(v),
                     help="Beats a frame-buffer word holds (the same block RAM, wider and shallower): each window "
                          "generator reads that many beats of a pixel a cycle (fewer where a pixel's beats are not a "
                          "multiple of it) into as many times E IN banks; default: the network's engine setting, "
                          "else 1."),
    )(command)


#: ``--merge/--no-merge``: the command receives ``merge`` (``None``: the files' ``merge:`` settings),
#: for :func:`litefly.config.load_network`'s ``merge``.
merge_option: Decorator = click.option(
    "--merge/--no-merge", "merge", default=None,
    help="Merge each chain's adjacent factors whose product is one DeBut factor with no more MACs "
         "(docs/config.md, \"Merged factors\"), or run the chains as declared; default: as the files say "
         "(their merge: settings). Another chain is another engine, with another hash.")
