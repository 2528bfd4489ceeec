"""The teacher cache: one Writer/Reader protocol, registered backends and codecs."""

from storage import wds_store, zarr_store  # noqa: F401  (register the backends)
from storage.base import (
    BACKENDS,
    CacheFormatError,
    CacheHeader,
    Reader,
    Writer,
    cache_summary,
    open_cache,
    read_header,
    verify_cache,
)

__all__ = [
    "BACKENDS",
    "CacheFormatError",
    "CacheHeader",
    "Reader",
    "Writer",
    "cache_summary",
    "open_cache",
    "read_header",
    "verify_cache",
]
