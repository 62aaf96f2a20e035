"""Pipe mode's FIFOs on their own: per-epoch FIFOs, a reader that stops early, no FIFO left
behind when the job ends while one waits for its reader, a Gzip channel decompressed, and
RecordIO records around each file."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

from chainer_sagemaker_cdk.local.pipe import PipeFeeder


def _source(tmp_path: Path) -> tuple[Path, bytes]:
    source = tmp_path / "channel"
    (source / "sub").mkdir(parents=True)
    (source / "b.rec").write_bytes(b"B" * 70_000)
    (source / "sub" / "c.rec").write_bytes(b"C" * 10)
    (source / "a.rec").write_bytes(os.urandom(2_000_000))
    data = b"".join((source / n).read_bytes() for n in ("a.rec", "b.rec", "sub/c.rec"))
    return source, data


def test_each_epoch_gets_the_channels_files_in_order_and_an_early_close_ends_only_that_epoch(
    tmp_path: Path,
) -> None:
    source, data = _source(tmp_path)
    fifos = tmp_path / "data"
    feeder = PipeFeeder("train", source, fifos, max_epochs=3).start()
    try:
        assert (fifos / "train_0").is_fifo()  # there before the script starts
        with open(fifos / "train_0", "rb") as pipe:
            assert pipe.read(1000) == data[:1000]  # and closed early
        with open(fifos / "train_1", "rb") as pipe:
            assert pipe.read() == data
        with open(fifos / "train_2", "rb") as pipe:
            assert pipe.read() == data
    finally:
        feeder.stop()
    assert feeder.epochs_fed == 3
    assert not (fifos / "train_3").exists()  # bounded by max_epochs
    assert list(fifos.iterdir()) == []


def test_stopping_while_no_script_reads_leaves_no_fifo(tmp_path: Path) -> None:
    source, _ = _source(tmp_path)
    feeder = PipeFeeder("train", source, tmp_path / "data").start()
    feeder.stop()
    assert feeder.epochs_fed == 0
    assert list((tmp_path / "data").iterdir()) == []


def test_a_gzip_channel_is_streamed_decompressed_and_a_file_that_is_not_gzip_is_named(
    tmp_path: Path,
) -> None:
    source = tmp_path / "channel"
    source.mkdir()
    (source / "a.rec.gz").write_bytes(gzip.compress(b"first file\n"))
    (source / "b.rec.gz").write_bytes(gzip.compress(b"second file\n"))
    (source / "c.rec.gz").write_bytes(b"plain text, not gzip\n")
    fifos = tmp_path / "data"
    feeder = PipeFeeder("train", source, fifos, max_epochs=1, gzipped=True).start()
    try:
        with open(fifos / "train_0", "rb") as pipe:
            assert pipe.read() == b"first file\nsecond file\n"
    finally:
        feeder.stop()
    assert feeder.error is not None
    assert "c.rec.gz" in feeder.error
    assert "is Gzip" in feeder.error


def test_record_io_wraps_each_decompressed_file_in_one_padded_record(tmp_path: Path) -> None:
    source = tmp_path / "channel"
    source.mkdir()
    (source / "a.gz").write_bytes(gzip.compress(b"12345"))
    (source / "b.gz").write_bytes(gzip.compress(b"abcd"))
    fifos = tmp_path / "data"
    feeder = PipeFeeder("train", source, fifos, max_epochs=1, gzipped=True, record_io=True).start()
    try:
        with open(fifos / "train_0", "rb") as pipe:
            data = pipe.read()
    finally:
        feeder.stop()
    magic = struct.pack("<I", 0xCED7230A)
    first = magic + struct.pack("<I", 5) + b"12345\0\0\0"
    second = magic + struct.pack("<I", 4) + b"abcd"
    assert data == first + second
    assert feeder.error is None
