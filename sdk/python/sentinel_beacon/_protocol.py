"""One heartbeat over HTTP, in either protocol, with the answer normalised."""

from __future__ import annotations

import json
import math
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Optional

PROTOCOL_BEACON = "beacon"
PROTOCOL_ABS = "abs"

_MAX_RESPONSE_BYTES = 1 << 20


class StatusError(Exception):
    """A non-200 answer from sentinel."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.message = message
        text = f"sentinel answered {code}"
        super().__init__(f"{text}: {message}" if message else text)


class TransportError(Exception):
    """Sentinel could not be reached (refused, reset, timed out, bad answer)."""


def retryable(err: BaseException) -> bool:
    """Whether a failed request is worth retrying soon: transport failures,
    408, 429 and 5xx are; other 4xx would be answered the same until someone
    fixes the configuration."""
    if isinstance(err, StatusError):
        return err.code >= 500 or err.code in (408, 429)
    return True


@dataclass
class Response:
    """A heartbeat answer of either protocol in the Beacon protocol's terms: an
    ABS answer's agentId is installation_id, its status is state."""

    installation_id: str = ""
    state: str = ""
    heartbeat_interval_seconds: float = 0.0
    next_heartbeat_at: str = ""
    command: str = ""
    runtime_token: Optional[Dict[str, Any]] = None  # registration or refresh
    registered: bool = False
    revoked: bool = False
    reason: str = ""
    # None when sentinel names no timeout; 0 means no grace at all.
    shutdown_timeout_ms: Optional[int] = None


def heartbeat_url(endpoint: str, agent_id: str, protocol: str) -> str:
    """The heartbeat URL; raises ValueError for a bad endpoint or protocol."""
    base = endpoint.rstrip("/")
    u = urllib.parse.urlsplit(base)
    if u.scheme not in ("http", "https"):
        raise ValueError(f"endpoint {endpoint!r}: scheme must be http or https")
    if not u.netloc:
        raise ValueError(f"endpoint {endpoint!r} has no host")
    if protocol == PROTOCOL_BEACON:
        return f"{base}/api/v1/installations/{urllib.parse.quote(agent_id, safe='')}/heartbeat"
    if protocol == PROTOCOL_ABS:
        return f"{base}/v1/heartbeat?" + urllib.parse.urlencode({"agentId": agent_id})
    raise ValueError(f"unknown protocol {protocol!r} (want beacon or abs)")


def decode_response(protocol: str, raw: bytes) -> Response:
    """Decode an answer body; raises TransportError when it is not JSON."""
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise TransportError(f"decode heartbeat answer: {e}") from None
    if not isinstance(doc, dict):
        raise TransportError("decode heartbeat answer: not a JSON object")
    timeout = _number(doc.get("shutdown_timeout_ms"))
    timeout = int(timeout) if timeout is not None else None
    command = doc.get("command") if isinstance(doc.get("command"), str) else ""
    if protocol == PROTOCOL_ABS:
        return Response(
            installation_id=str(doc.get("agentId") or ""),
            state=str(doc.get("status") or ""),
            next_heartbeat_at=str(doc.get("nextDeadline") or ""),
            command=command,
            revoked=doc.get("revoked") is True or doc.get("status") == "REVOKED",
            reason=str(doc.get("reason") or ""),
            shutdown_timeout_ms=timeout,
        )
    token = None
    for key in ("refreshed_token", "runtime_token"):  # a refresh wins
        t = doc.get(key)
        if isinstance(t, dict) and isinstance(t.get("runtime_token"), str) and t["runtime_token"]:
            token = t
            break
    interval = _number(doc.get("heartbeat_interval_seconds"))
    return Response(
        installation_id=str(doc.get("installation_id") or ""),
        state=str(doc.get("state") or ""),
        heartbeat_interval_seconds=interval if interval is not None and interval > 0 else 0.0,
        next_heartbeat_at=str(doc.get("next_heartbeat_at") or ""),
        command=command,
        runtime_token=token,
        registered=doc.get("registered") is True,
        revoked=doc.get("revoked") is True,
        reason=str(doc.get("reason") or ""),
        shutdown_timeout_ms=timeout,
    )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _number(v: Any) -> Optional[float]:
    """A finite JSON number, else None (booleans are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _error_message(raw: bytes) -> str:
    try:
        doc = json.loads(raw.decode("utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]:
            return doc["error"]
    except (ValueError, UnicodeDecodeError):
        pass
    s = raw.decode("utf-8", "replace").strip()
    return s[:200] + "…" if len(s) > 200 else s


def post_json(url: str, token: str, body: Dict[str, Any], timeout: float, user_agent: str) -> bytes:
    """POST body as JSON with the bearer credential; return the 200 answer's
    body. Raises StatusError for any other status, TransportError otherwise.
    Neither error ever carries the credential."""
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json")
    req.add_header("User-Agent", user_agent)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            raw = resp.read(_MAX_RESPONSE_BYTES)
            if resp.status != 200:
                raise StatusError(resp.status, _error_message(raw))
            return raw
    except urllib.error.HTTPError as e:
        try:
            raw = e.read(_MAX_RESPONSE_BYTES)
        except OSError:
            raw = b""
        finally:
            e.close()
        raise StatusError(e.code, _error_message(raw)) from None
    except urllib.error.URLError as e:
        raise TransportError(f"post to {_origin(url)}: {e.reason}") from None
    except (OSError, socket.timeout, ValueError) as e:  # reset, timeout, bad status line
        raise TransportError(f"post to {_origin(url)}: {e}") from None


def _origin(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would resend the credential somewhere else: refuse it.
    def redirect_request(self, *args, **kwargs):  # noqa: D102
        return None


# Proxies from the environment still apply (agents behind one need it); only
# redirects are refused.
_OPENER = urllib.request.build_opener(_NoRedirect())
