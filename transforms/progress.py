"""Progress of a job run on this machine: workers count the elements that reach a step into files under a local
folder, and the launcher sums them while the job runs.

FnApiRunner's ``run()`` returns only once the pipeline has finished, so Beam's metrics cannot be queried while it
runs; a file per counting DoFn instance works the same for its in-process threads and its ``multi_processing``
worker processes, which share this machine's disk. Remote runners show progress in their own console: the step is
not added there.
"""

import os
import sys
import threading
import time
import uuid

import apache_beam as beam

# Seconds between a worker's writes of its count, and between the launcher's reads of them.
WRITE_EVERY_S = 0.5


class CountProgressFn(beam.DoFn):
    """Counts the elements it sees into ``folder/<unique name>`` (a decimal number, replaced atomically); yields
    nothing."""

    def __init__(self, folder: str):
        self.folder = folder

    def setup(self):
        self.path = os.path.join(self.folder, uuid.uuid4().hex)
        self.count, self.written_at = 0, 0.0

    def process(self, element):
        self.count += 1
        if time.monotonic() - self.written_at > WRITE_EVERY_S:
            self._write()
        return ()

    def finish_bundle(self):
        self._write()

    def _write(self):
        temporary = f"{self.path}.tmp"
        with open(temporary, "w") as handle:
            handle.write(str(self.count))
        os.replace(temporary, self.path)
        self.written_at = time.monotonic()


def counted(folder: str) -> int:
    """The sum of the counts written under ``folder`` so far."""
    total = 0
    for name in os.listdir(folder):
        if name.endswith(".tmp"):
            continue
        try:
            with open(os.path.join(folder, name)) as handle:
                total += int(handle.read() or 0)
        except (OSError, ValueError):  # replaced while being read: the next poll sees it
            continue
    return total


def progress_line(unit: str, done: int, total: int | None, elapsed: float) -> str:
    """``"augment: 120/640 images, 11.3/s, ETA 46s"``-style text (no ETA without a total or a rate)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    count = f"{done}/{total}" if total else f"{done}"
    line = f"{count} {unit}, {rate:.1f}/s"
    if total and rate > 0 and done < total:
        line += f", ETA {(total - done) / rate:.0f}s"
    return line


class ProgressReporter:
    """While a job runs (``with``), a thread prints ``progress_line`` on stderr: in place on a terminal (every
    ``WRITE_EVERY_S``), else one line every ``log_every_s``; on leaving, one final line."""

    def __init__(self, folder: str, name: str, unit: str, total: int | None, log_every_s: float = 30.0):
        self.folder, self.name, self.unit, self.total = folder, name, unit, total
        self.log_every_s = log_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self):
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        if exc_info[0] is None:
            line = progress_line(self.unit, counted(self.folder), self.total, time.monotonic() - self.started)
            self._print(f"{self.name}: {line}", final=True)

    def _print(self, text: str, final: bool = False) -> None:
        stream = sys.stderr
        if stream.isatty():
            stream.write(f"\r{text}\033[K" + ("\n" if final else ""))
        else:
            stream.write(f"{text}\n")
        stream.flush()

    def _run(self):
        last_logged = time.monotonic()
        interactive = sys.stderr.isatty()
        while not self._stop.wait(WRITE_EVERY_S):
            now = time.monotonic()
            if not interactive and now - last_logged < self.log_every_s:
                continue
            last_logged = now
            self._print(
                f"{self.name}: {progress_line(self.unit, counted(self.folder), self.total, now - self.started)}"
            )
