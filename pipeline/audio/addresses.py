"""Every kind of audio address, registered: a whole file and a range of a recording
(:mod:`pipeline.audio.files`), a row of a parquet or Arrow table (:mod:`pipeline.audio.embedded`).
A new kind is a module holding its registered :class:`Address`, imported here."""

from pipeline.audio import embedded, files  # noqa: F401  (register the kinds)
from pipeline.audio.address import ADDRESSES, Address, Located, address_of

__all__ = ["ADDRESSES", "Address", "Located", "address_of"]
