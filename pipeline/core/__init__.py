"""The small core every other part may use: config, errors, registry, safe I/O, devices,
progress.

Importing it also bounds oneDNN's primitive cache (torch's CPU kernels). oneDNN keeps a
compiled primitive per input shape, up to 1024 by default, each holding its own buffers: over
a corpus, where nearly every batch has a new shape, that cache grew a student's conv stack by
1.5 GB in 150 batches, and made the evaluation's peak memory grow with the corpus. A small
cache keeps memory flat at the same speed (a new shape is compiled either way). The variable
is read when oneDNN first runs, so this must happen before any torch op; a value already in the
environment wins.
"""

import os

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
