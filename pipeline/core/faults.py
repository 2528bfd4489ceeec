"""Fault injection: a process kills itself (SIGKILL) at a named point, so kill-and-resume tests
hit exactly that point on any machine, fast or slow, instead of sleeping until a moment in
another process.

``HUBERT_KD_FAULT=<point>:<n>`` arms one point; the points are:

- ``checkpoint:<step>``: right after the training checkpoint of step ``<step>`` is written
  (every rank, after the barrier; a run resumed from that step never meets it again);
- ``part:<k>``: right after this process commits its ``k``-th part of a teacher cache, still
  holding the part's lock (the harshest moment: its lock is left behind).

Unset, :func:`reached` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

FAULT = "HUBERT_KD_FAULT"

_seen: Counter = Counter()


def reached(point: str, n: int | None = None) -> None:
    """Mark that this process reached ``point`` (its ``n``-th time when ``n`` is None, else the
    value ``n``, e.g. a step); SIGKILL itself if ``HUBERT_KD_FAULT`` names that point and value.

    Raises:
        ValueError: ``HUBERT_KD_FAULT`` is set but is not ``<point>:<integer>``.
    """
    spec = os.environ.get(FAULT)
    if n is None:
        _seen[point] += 1
        n = _seen[point]
    if not spec:
        return
    name, _, value = spec.partition(":")
    if not value.strip().isdigit():
        raise ValueError(f"{FAULT}={spec!r}: expected <point>:<integer>, e.g. checkpoint:6")
    if name == point and int(value) == n:
        print(f"{FAULT}={spec}: killing this process (fault injection; unset {FAULT} in "
              "normal runs)", file=sys.stderr, flush=True)  # fmt: skip
        os.kill(os.getpid(), signal.SIGKILL)
