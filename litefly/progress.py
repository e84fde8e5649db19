"""Progress for long steps: a tqdm bar on a terminal, plain lines in pipes and logs.

``progress(iterable_or_total, desc)`` is what long loops use (training epochs, layers,
sweeps); ``status(desc)`` wraps one long call with no natural steps (a Verilator build,
Yosys synthesis): on a terminal a spinner, otherwise a start line, a "still running" line
every ``heartbeat`` seconds and an end line with the time, so a log never stays silent
for minutes.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Iterable, Iterator, TextIO

__all__ = ["progress", "status", "PlainProgress"]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class PlainProgress:
    """tqdm's small interface (``update``, ``close``, iteration, context manager) as plain lines.

    A line is printed at the start, at most every ``every`` seconds or each 10% (whichever
    comes first once ``every`` has passed), and at the end.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 stream: TextIO | None = None, every: float = 10.0) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc or "progress"
        self.stream = stream or sys.stderr
        self.every = every
        self.n = 0
        self.start = time.monotonic()
        self._last_time = self.start
        self._last_decile = -1
        self._closed = False
        self._print("started")

    def _print(self, what: str) -> None:
        print(f"{self.desc}: {what}", file=self.stream, flush=True)

    def _state(self) -> str:
        elapsed = time.monotonic() - self.start
        if self.total:
            return f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%), {elapsed:.1f} s"
        return f"{self.n} done, {elapsed:.1f} s"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        decile = int(10 * self.n / self.total) if self.total else -1
        if (self.total and decile > self._last_decile and now - self._last_time >= min(self.every, 1.0)) \
                or now - self._last_time >= self.every:
            self._last_time, self._last_decile = now, decile
            if not (self.total and self.n >= self.total):
                self._print(self._state())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix_str(self, text: str) -> None:  # tqdm compatibility; shown on the next line
        self.desc = f"{self.desc.split(' [')[0]} [{text}]"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print(f"done, {self._state()}")

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "PlainProgress(total=...) is not iterable"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable_or_total: Iterable[Any] | int, desc: str = "", *, stream: TextIO | None = None,
             every: float = 10.0, force_plain: bool = False) -> Any:
    """A progress bar on a terminal, plain progress lines otherwise (stderr by default).

    ``progress(range(10), "epochs")`` wraps an iterable; ``progress(100, "columns")`` returns
    an object with ``update(n)`` and ``close()`` (also a context manager).
    """
    stream = stream or sys.stderr
    is_total = isinstance(iterable_or_total, int) and not isinstance(iterable_or_total, bool)
    iterable = None if is_total else iterable_or_total
    total = int(iterable_or_total) if is_total else None
    if not force_plain and _is_terminal(stream):
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415
        except ImportError:
            pass
        else:
            return tqdm(iterable, total=total, desc=desc, file=stream, leave=False)
    return PlainProgress(iterable, total=total, desc=desc, stream=stream, every=every)


@contextlib.contextmanager
def status(desc: str, *, stream: TextIO | None = None, heartbeat: float = 30.0,
           force_plain: bool = False) -> Iterator[None]:
    """One long step: a spinner on a terminal; start, heartbeat and end lines otherwise."""
    stream = stream or sys.stderr
    if not force_plain and _is_terminal(stream):
        from rich.console import Console  # noqa: PLC0415
        with Console(file=stream).status(desc):
            yield
        return
    start = time.monotonic()
    print(f"{desc} ...", file=stream, flush=True)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            print(f"{desc}: still running, {time.monotonic() - start:.0f} s", file=stream, flush=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        thread.join(timeout=1.0)
        print(f"{desc}: {'done' if ok else 'stopped'} in {time.monotonic() - start:.1f} s", file=stream, flush=True)
