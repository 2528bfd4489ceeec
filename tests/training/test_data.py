"""Streaming the cache for training: no duplicates across workers, determinism, length batches."""

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.audio.batching import length_batches
from pipeline.core.errors import CacheFormatError
from pipeline.corpus.manifest import Utterance, read_manifest
from pipeline.training.cache_batches import CacheBatches


def _stream(tiny_corpus, tiny_cache, **overrides):
    utts = read_manifest(tiny_corpus)
    kwargs = dict(batch_seconds=6.0, seed=0, shuffle=True, pool=5) | overrides
    return CacheBatches(tiny_cache, utts, tiny_corpus, **kwargs), utts


def _ids(dataset, workers=0):
    return [b.ids for b in DataLoader(dataset, batch_size=None, num_workers=workers)]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_utterance_once_per_epoch(tiny_corpus, tiny_cache, workers):
    dataset, utts = _stream(tiny_corpus, tiny_cache)
    seen = Counter(i for batch in _ids(dataset, workers) for i in batch)
    assert seen == Counter(u.id for u in utts)


def test_stream_is_deterministic_per_seed_and_epoch(tiny_corpus, tiny_cache):
    a, _ = _stream(tiny_corpus, tiny_cache)
    b, _ = _stream(tiny_corpus, tiny_cache)
    assert _ids(a) == _ids(b)
    b.set_epoch(1)
    assert _ids(a) != _ids(b)


def test_batches_respect_the_padded_audio_budget(tiny_corpus, tiny_cache):
    dataset, _ = _stream(tiny_corpus, tiny_cache, shuffle=False, pool=0)
    for batch in dataset:
        longest = int(batch.lengths.max()) / 16_000
        assert len(batch.ids) == 1 or len(batch.ids) * longest <= 6.0
        assert batch.teacher_logits is None  # encoded until the student's device decodes them
        assert batch.teacher_fields["logits"].shape[:2] == batch.frame_mask.shape
        decoded = batch.decode_teacher(dataset.codec, dataset.argmax_targets)
        assert decoded.teacher_logits.shape[:2] == batch.frame_mask.shape == batch.targets.shape
        assert not decoded.teacher_logits[~batch.frame_mask].any()  # zero on padding
        assert int(batch.frame_mask.sum()) == batch.num_frames


def test_utterances_missing_from_the_cache_are_named(tiny_corpus, tiny_cache):
    stranger = Utterance("nobody-0001", "x.flac", 16_000, 16_000, "", "", "train")
    with pytest.raises(CacheFormatError, match="nobody-0001: not in the cache"):
        CacheBatches(
            tiny_cache, [stranger], tiny_corpus, batch_seconds=1, seed=0, shuffle=False, pool=0
        )


def test_length_batches():
    sizes = [1.0, 4.0, 2.0, 2.5, 9.0]
    batches = length_batches(sizes, lambda s: s, batch_seconds=6.0)
    assert batches == [[1.0, 2.0], [2.5], [4.0], [9.0]]
    assert length_batches(sizes, lambda s: s, batch_seconds=0) == [[s] for s in sorted(sizes)]


def test_skipping_batches_gives_the_rest_of_the_epoch(tiny_corpus, tiny_cache):
    dataset, _ = _stream(tiny_corpus, tiny_cache, batch_seconds=4.0, pool=3)
    full = _ids(dataset)
    assert len(full) > 3
    dataset.set_epoch(0, skip=2)
    assert _ids(dataset) == full[2:]


def test_a_streamed_batch_is_pinned_whole(tiny_corpus, tiny_cache, monkeypatch):
    """DataLoader(pin_memory=True) pins what a batch's ``pin_memory()`` returns: every tensor
    of it (audio, targets, mask, encoded teacher logits, features), so that the copies to the
    GPU really overlap its work. Pinning needs CUDA, so a stand-in records the calls here."""
    from torch.utils.data._utils.pin_memory import pin_memory

    dataset, _ = _stream(tiny_corpus, tiny_cache, shuffle=False, pool=0)
    batch = next(iter(dataset))
    tensors = [batch.wav, batch.lengths, batch.targets, batch.frame_mask,
               *batch.teacher_fields.values(), *batch.features.values()]  # fmt: skip
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a, **k: pinned.append(t) or t)
    out = pin_memory(batch)  # what the DataLoader's pinning thread calls
    assert type(out) is type(batch) and out.ids == batch.ids
    assert len(pinned) == len(tensors) and all(any(p is t for p in pinned) for t in tensors)
