"""An entry's audio, checked and pinned down to the samples it uses: the address fields and
the identity (sha256) of its manifest row, for each place audio can be (see
:class:`~pipeline.corpus.manifest.Utterance`)."""

from __future__ import annotations

import io
from typing import NamedTuple

from pipeline.audio.embedded import embedded_audio
from pipeline.audio.files import open_audio, read_frames
from pipeline.core.errors import AudioError
from pipeline.core.hashing import sha256_bytes, sha256_file
from pipeline.corpus.base import Entry


class Address(NamedTuple):
    """Where an utterance's samples are, at the audio's own rate, and their identity."""

    samples: int
    sample_rate: int
    sha256: str
    start: int = 0
    row: int | None = None
    column: str = ""


def locate(entry: Entry) -> Address:
    """Decode the audio ``entry`` names, check it, and say where its samples are: a whole
    file; a span of a recording, its times made samples by rounding half up (``time x rate``,
    :meth:`Span.samples`), checked to lie inside the recording; or a table cell's embedded
    file (parquet or Arrow).

    Identity: a file's sha256; a table cell's embedded bytes' sha256; a span's decoded
    samples' sha256 (float32 little-endian, channels interleaved, at the file's rate), so a
    span changes identity exactly when its samples do.

    Raises:
        AudioError: one line, prefixed with the entry's ``where``: the source's own complaint,
            or missing, undecodable, empty, NaN/Inf or out-of-range audio.
    """
    prefix = f"{entry.where}: " if entry.where else ""
    if entry.error:
        raise AudioError(prefix + entry.error)
    try:
        if entry.row is not None:
            return _cell(entry)
        if entry.span is not None:
            return _span(entry)
        with open_audio(entry.audio, entry.audio) as f:
            samples, rate = read_frames(f, entry.audio).shape[0], f.samplerate
        return Address(samples, rate, sha256_file(entry.audio))
    except AudioError as err:  # named once: a table cell's message names its row already
        raise AudioError(f"{'' if str(err).startswith(prefix) else prefix}{err}") from err


def _span(entry: Entry) -> Address:
    path = entry.audio
    with open_audio(path, path) as f:
        rate, total = f.samplerate, f.frames
        first, last = entry.span.samples(rate, total)
        if last > total:
            raise AudioError(
                f"{path}: {entry.id} ends at sample {last} ({last / rate:g} s), past the "
                f"recording's end ({total} samples, {total / rate:g} s)"
            )
        if last <= first:
            raise AudioError(f"{path}: {entry.id} is empty (samples {first} to {last})")
        data = read_frames(f, path, first, last - first)
    digest = sha256_bytes(data.astype("<f4", copy=False).tobytes())
    return Address(last - first, rate, digest, start=first)


def _cell(entry: Entry) -> Address:
    where = f"{entry.audio}: row {entry.row}"
    data = embedded_audio(entry.audio, entry.row, entry.column)
    with open_audio(io.BytesIO(data), where) as f:
        samples, rate = read_frames(f, where).shape[0], f.samplerate
    return Address(samples, rate, sha256_bytes(data), row=entry.row, column=entry.column)
