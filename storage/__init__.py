"""The teacher cache: one Writer/Reader protocol, registered backends."""

from storage import zarr_store  # noqa: F401  (registers the backend)
from storage.base import (
    BACKENDS,
    CacheFormatError,
    CacheHeader,
    Reader,
    Writer,
    open_cache,
    read_header,
)

__all__ = [
    "BACKENDS",
    "CacheFormatError",
    "CacheHeader",
    "Reader",
    "Writer",
    "open_cache",
    "read_header",
]
