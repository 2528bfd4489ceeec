"""hubert-kd's library: see the README for the layout and the import rule.

oneDNN (torch's CPU kernels) keeps a compiled primitive per input shape, up to 1024 by default,
each holding its own buffers: over a corpus, where nearly every batch has a new shape, that
cache grew a student's conv stack by 1.5 GB in 150 batches and made peak memory grow with the
corpus. A small cache keeps memory flat at the same speed (new shapes are compiled either
way); the environment variable, read when oneDNN first runs, still wins if set.
"""

import os

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
