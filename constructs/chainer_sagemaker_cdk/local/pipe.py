"""Pipe input mode for local runs: SageMaker's per-epoch FIFOs, fed from the channel's files.

With ``TrainingInputMode`` Pipe, SageMaker does not download a channel: it streams the
channel's S3 objects, one after the other, into the FIFO ``/opt/ml/input/data/<channel>_0``;
when the script has read that to its end, ``<channel>_1`` carries the same data again for the
next epoch, and so on. :class:`PipeFeeder` does the same from the channel's local files (sorted
by path, concatenated as they are, like ``RecordWrapperType`` None): it creates
``<channel>_0``, waits for the script to open it, creates ``<channel>_1`` (so the script finds
the next epoch's FIFO the moment this one ends, or it closes this one early), writes the data,
removes the drained FIFO, and so on, up to ``max_epochs`` FIFOs or until the job ends.

A channel with ``CompressionType`` Gzip (which SageMaker uses in Pipe mode only) is streamed
decompressed, file by file, as SageMaker decompresses the objects it streams; a file that is
not gzip ends that epoch's data there, and :attr:`PipeFeeder.error` names it. With
``RecordWrapperType`` RecordIO each file (decompressed first) becomes one RecordIO record, as
SageMaker wraps each object: the magic number ``0xced7230a`` and the length as little-endian
uint32s (the length's top three bits, the continuation flag, are 0), the data, and zero padding
to a multiple of 4 bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import os
import struct
import threading
from pathlib import Path

__all__ = ["MAX_EPOCHS", "PipeFeeder"]

MAX_EPOCHS = 1000
_CHUNK = 1 << 20
_RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_MAX = (1 << 29) - 1  # the length field's 29 bits


class PipeFeeder:
    """Feeds ``<input_data_dir>/<channel>_<epoch>`` FIFOs from ``source`` on a thread."""

    def __init__(
        self,
        channel: str,
        source: Path,
        input_data_dir: Path,
        *,
        max_epochs: int = MAX_EPOCHS,
        poll: float = 0.05,
        gzipped: bool = False,
        record_io: bool = False,
    ) -> None:
        self.channel = channel
        self.gzipped = gzipped
        self.record_io = record_io
        self.error: str | None = None
        self.files = (
            sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        )
        self.input_data_dir = input_data_dir
        self.max_epochs = max_epochs
        self.epochs_fed = 0
        self._poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pipe-{channel}", daemon=True)
        self.fifo(0).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.fifo(0))  # before the job starts: the script may open it at once

    def fifo(self, epoch: int) -> Path:
        return self.input_data_dir / f"{self.channel}_{epoch}"

    def start(self) -> PipeFeeder:
        self._thread.start()
        return self

    def _open_writer(self, path: Path) -> int | None:
        """Open ``path`` for writing once a reader has it open; None when stopped first."""
        while not self._stop.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                self._stop.wait(self._poll)
                continue
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
            return fd
        return None

    def _write_epoch(self, fd: int) -> None:
        with contextlib.suppress(BrokenPipeError):  # the script closed its end early
            for path in self.files:
                opener = gzip.open if self.gzipped else open
                with opener(path, "rb") as source:
                    try:
                        if self.record_io:
                            self._write_record(fd, path, source.read())
                            continue
                        while chunk := source.read(_CHUNK):
                            _write_all(fd, chunk)
                    except (gzip.BadGzipFile, EOFError) as exc:
                        self.error = (
                            f"channel {self.channel!r} is Gzip but {path} is not a whole gzip "
                            f"file ({exc}); compress it, or drop the channel's compression"
                        )
                        return

    def _write_record(self, fd: int, path: Path, data: bytes) -> None:
        if len(data) > _RECORDIO_MAX:
            self.error = (
                f"{path} is {len(data)} bytes, more than one RecordIO record holds "
                f"({_RECORDIO_MAX}); split it, or drop the channel's RecordIO wrapper"
            )
            raise BrokenPipeError  # ends this epoch's data here
        _write_all(fd, struct.pack("<II", _RECORDIO_MAGIC, len(data)))
        _write_all(fd, data + b"\0" * (-len(data) % 4))

    def _run(self) -> None:
        for epoch in range(self.max_epochs):
            fd = self._open_writer(self.fifo(epoch))
            if fd is None:
                return
            try:
                if epoch + 1 < self.max_epochs:  # there before this epoch can end
                    os.mkfifo(self.fifo(epoch + 1))
                self._write_epoch(fd)
            finally:
                os.close(fd)
            self.fifo(epoch).unlink(missing_ok=True)
            self.epochs_fed = epoch + 1

    def stop(self) -> None:
        """Stop feeding (the job has ended); leaves no FIFO behind."""
        self._stop.set()
        self._thread.join(timeout=5)
        for path in self.input_data_dir.glob(f"{self.channel}_*"):
            if path.is_fifo():
                path.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
