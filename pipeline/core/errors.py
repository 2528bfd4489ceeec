"""Domain errors, in one light module so the CLI can map them without importing torch."""


class ConfigError(ValueError):
    """A params file or section that does not match its dataclass."""


class AudioError(ValueError):
    """An audio file that is missing, unreadable, empty or not finite."""


class CorpusError(ValueError):
    """A corpus folder or list that does not have the expected layout."""


class ManifestError(ValueError):
    """A manifest file or row that cannot be used."""


class CacheFormatError(ValueError):
    """A cache folder that is incomplete, damaged or of an unknown schema."""


class CheckpointError(ValueError):
    """A checkpoint (teacher, student, training state) that cannot be (safely) loaded."""


class OutputError(ValueError):
    """An output path that must not be written: someone else's data, or another run's output."""


def single_line(message: object) -> str:
    """A message (a library's, which may run over several lines, as pyarrow's and PyYAML's
    do) in one line: its non-empty lines, stripped, joined by a space."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())
