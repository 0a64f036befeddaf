"""The token file: where runtime tokens are kept between runs."""

from __future__ import annotations

import json
import os
import tempfile


def read_token_file(path: str) -> str:
    """Return the runtime token kept in path, '' when the file is missing or
    empty. The file holds the bare token; a JSON object with a
    ``runtime_token`` field (sentinel's answer) is accepted too."""
    try:
        with open(path, encoding="utf-8") as f:
            s = f.read().strip()
    except FileNotFoundError:
        return ""
    if s.startswith("{"):
        try:
            tok = json.loads(s).get("runtime_token", "")
        except (ValueError, AttributeError) as e:
            raise ValueError(f"read token file {path}: not a token: {e}") from None
        return str(tok or "").strip()
    return s


def write_token_file(path: str, token: str) -> None:
    """Store token in path with mode 0600, atomically: a temporary file in the
    same directory is written, fsynced and renamed over path, and the directory
    fsynced, so that a crash leaves the old or the new token, never a torn one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp-", dir=directory)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; say so explicitly
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)  # best effort: some filesystems refuse to sync a directory
    except OSError:
        pass
    finally:
        os.close(dfd)
