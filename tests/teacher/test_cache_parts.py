"""Stage one's parts are named by the audio they hold, not by where it lives: a fixed file renames
exactly its part, a moved corpus none, and a dropped utterance keeps the unchanged committed
parts."""

import json
from pathlib import Path

import pytest
from conftest import tiny_params

from pipeline.core.config import section
from pipeline.teacher.caching import CacheTeacherConfig
from stages import cache_teacher


def test_a_part_is_named_by_its_audio_not_by_where_it_lives(tiny_corpus):
    """Audio fixed in place (same id and length) renames exactly its part, so its stale logits
    are never reused; the same audio under another root renames none."""
    from dataclasses import replace
    from types import SimpleNamespace

    from pipeline.corpus.manifest import read_manifest
    from pipeline.teacher.caching import plan_shards

    params = tiny_params()
    params["cache_teacher"]["shard_utterances"] = 4
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    header = SimpleNamespace(content=dict)  # plan_shards reads only the header's content
    utts = read_manifest(tiny_corpus)
    assert all(u.sha256 for u in utts)

    def names(rows):
        return [shard.name for shard in plan_shards(rows, cfg, header)]

    assert names([replace(u, audio=u.audio.under(Path("elsewhere"))) for u in utts]) == names(utts)
    fixed = names([replace(utts[0], sha256="0" * 64), *utts[1:]])
    assert [a != b for a, b in zip(names(utts), fixed, strict=True)].count(True) == 1


def test_dropping_an_utterance_keeps_the_unchanged_committed_shards(
    tiny_corpus, tmp_path, monkeypatch
):
    params = tiny_params()
    params["cache_teacher"]["shard_utterances"] = 2
    cfg = section(params, "cache_teacher", CacheTeacherConfig)
    rows = tiny_corpus.read_text().splitlines()
    manifest = tiny_corpus.parent / "manifest-copy.jsonl"  # audio paths stay valid beside it
    manifest.write_text("\n".join(rows) + "\n")
    real, calls = cache_teacher.run_shard, []

    def failing(*args, **kwargs):
        calls.append(args[4])  # the shard
        if len(calls) == 4:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_teacher, "run_shard", failing)
    with pytest.raises(RuntimeError, match="killed"):
        cache_teacher.run(cfg, manifest, tmp_path / "cache")
    committed = [shard.utts for shard in calls[:3]]
    dropped = committed[0][0].id  # an utterance of the first committed shard
    manifest.write_text("\n".join(r for r in rows if json.loads(r)["id"] != dropped) + "\n")
    calls.clear()

    def counting(*args, **kwargs):
        calls.append(args[4])  # the shard
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_teacher, "run_shard", counting)
    header = cache_teacher.run(cfg, manifest, tmp_path / "cache")
    redone = {u.id for shard in calls for u in shard.utts}
    assert header.num_utterances == len(rows) - 1
    kept = [shard for shard in committed[1:] if not {u.id for u in shard} & redone]
    assert len(kept) >= 1, "unchanged committed shards were recomputed"
    manifest.unlink()
