"""One exception family. Every message is one line that names the file, field or value at fault."""


class PRTError(Exception):
    """Base class of every error prtcore and its plugins raise on purpose."""


class ConfigError(PRTError, ValueError):
    """A configuration field has a value outside its rule."""


class ArtifactError(PRTError):
    """A reward artifact on disk is missing, corrupt, of another format version or unsafe."""


class BackendError(PRTError):
    """A backend is unknown, not installed, or cannot do what was asked."""


class TokenizerMismatchError(PRTError):
    """Two models that must share a tokenizer do not."""


class DataError(PRTError, ValueError):
    """A data file is malformed; the message names the file and line."""


class ModelLoadError(PRTError):
    """A base model directory cannot be loaded."""


class TrainingError(PRTError):
    """Training stopped: non-finite loss, unwritable output directory and the like."""


class GenerationError(PRTError, ValueError):
    """A generation request cannot be served (prompt too long, bad sampling settings)."""
