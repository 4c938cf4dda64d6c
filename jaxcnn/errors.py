"""The exception types jaxcnn raises on bad input: each message says what was expected,
what was given, and how to fix it. All derive from `JaxcnnError` and a builtin type, so
callers may catch either."""


class JaxcnnError(Exception):
    """Base class of every error jaxcnn raises on purpose."""


class InputError(JaxcnnError, ValueError):
    """An array or image has the wrong rank, shape, channel count, dtype or values."""


class UnknownModelError(JaxcnnError, ValueError):
    """A model (or weights) name that is not registered; the message lists close matches."""


class ConfigError(JaxcnnError, ValueError):
    """A config key, type or combination of values that cannot work."""


class CheckpointError(JaxcnnError, ValueError):
    """A checkpoint or weight file that is missing, corrupt or of another architecture."""


class DatasetError(JaxcnnError, ValueError):
    """A dataset that is missing, empty, unreadable or inconsistent."""


class OfflineError(JaxcnnError, ConnectionError):
    """A download that cannot happen (no network); the message says where to put the file."""


class TrainingError(JaxcnnError, RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class WorkdirInUseError(JaxcnnError, RuntimeError):
    """Another live process trains in the same workdir (its lock is held)."""
