"""The teacher cache: parts written by any job where the cache lives, a header written last,
one Writer/Reader protocol per registered backend (zarr, webdataset), logit codecs."""

from storage import wds_store, zarr_store  # noqa: F401  (register the backends)
from storage.base import BACKENDS
from storage.cache import committed, finalize, open_part, prepare_location, prune, put_atomic
from storage.header import CacheFormatError, CacheHeader, read_header
from storage.reader import (
    CacheReader,
    cache_summary,
    open_cache,
    read_codec,
    read_frontend,
    verify_cache,
)

__all__ = [
    "BACKENDS",
    "CacheFormatError",
    "CacheHeader",
    "CacheReader",
    "cache_summary",
    "committed",
    "finalize",
    "open_cache",
    "open_part",
    "prepare_location",
    "prune",
    "put_atomic",
    "read_codec",
    "read_frontend",
    "read_header",
    "verify_cache",
]
