"""In-process agent SDK for Sentinel, the dead man's switch for AI agents.

Standard library only. See README.md beside this package.
"""

from ._beacon import (
    DEFAULT_FINAL_HEARTBEAT_TIMEOUT,
    DEFAULT_INTERVAL,
    DEFAULT_SHUTDOWN_TIMEOUT,
    Beacon,
    RevokedError,
    SentinelStop,
    TerminatedError,
    __version__,
)
from ._platform import default_id, detect_platform, sanitize_id, valid_id
from ._protocol import PROTOCOL_ABS, PROTOCOL_BEACON, StatusError, TransportError, retryable
from ._tokenfile import read_token_file, write_token_file

__all__ = [
    "Beacon",
    "DEFAULT_FINAL_HEARTBEAT_TIMEOUT",
    "DEFAULT_INTERVAL",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "PROTOCOL_ABS",
    "PROTOCOL_BEACON",
    "RevokedError",
    "SentinelStop",
    "StatusError",
    "TerminatedError",
    "TransportError",
    "__version__",
    "default_id",
    "detect_platform",
    "read_token_file",
    "retryable",
    "sanitize_id",
    "valid_id",
    "write_token_file",
]
