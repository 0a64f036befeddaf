"""Platform detection and agent ids, as the Go beacon does them."""

from __future__ import annotations

import os
import platform as _platform
import re
import socket
from typing import Callable, Dict, Optional

MAX_ID_LENGTH = 128
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTAINER_ID_FIND = re.compile(r"[0-9a-f]{64}")
_SHORT_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_SERVICE_ACCOUNT_NAMESPACE = "var/run/secrets/kubernetes.io/serviceaccount/namespace"


def valid_id(agent_id: str) -> bool:
    """Whether sentinel accepts agent_id: ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$."""
    return bool(_ID_RE.match(agent_id)) and not agent_id.endswith("\n")


def sanitize_id(s: str) -> str:
    """Turn s into a valid agent id ('' when nothing usable is left)."""
    out = []
    for ch in s:
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif ch in "._:@-":
            if out:
                out.append(ch)
        elif out:
            out.append("-")
        if len(out) >= MAX_ID_LENGTH:
            break
    agent_id = "".join(out)[:MAX_ID_LENGTH]
    return agent_id if valid_id(agent_id) else ""


def default_id(platform: Dict[str, object]) -> str:
    """The agent id derived from the platform: the pod name on Kubernetes, the
    short container id on Docker, the function name on Lambda, the hostname on
    bare metal."""
    typ = platform.get("type")
    if typ == "kubernetes":
        agent_id = str(platform.get("pod_name") or "")
    elif typ == "docker":
        agent_id = str(platform.get("container_id") or "")
        if len(agent_id) > 12 and _CONTAINER_ID_RE.match(agent_id):
            agent_id = agent_id[:12]  # what `docker ps` shows
    elif typ == "lambda":
        agent_id = str(platform.get("function_name") or "")
    else:
        agent_id = str(platform.get("hostname") or "")
    return sanitize_id(agent_id)


def _read(root: str, rel: str) -> Optional[str]:
    try:
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _find_container_id(text: str, markers=()) -> str:
    for line in text.splitlines():
        if markers and not any(m in line for m in markers):
            continue
        m = _CONTAINER_ID_FIND.search(line)
        if m:
            return m.group(0)
    return ""


def detect_platform(
    root: str = "/",
    environ: Optional[Dict[str, str]] = None,
    hostname: Optional[Callable[[], str]] = None,
) -> Dict[str, object]:
    """Detect where the agent runs, as the heartbeat's ``platform`` object.

    Lambda (``AWS_LAMBDA_FUNCTION_NAME``) and Kubernetes
    (``KUBERNETES_SERVICE_HOST``) win over Docker (``/.dockerenv``), because
    pods carry container markers too; anything else is bare metal. root,
    environ and hostname exist for tests.
    """
    env = os.environ if environ is None else environ
    get_host = hostname or socket.gethostname

    def host() -> str:
        try:
            return get_host().strip()
        except OSError:
            return ""

    fn = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
    if fn:
        region = env.get("AWS_REGION", "") or env.get("AWS_DEFAULT_REGION", "")
        return _compact({"type": "lambda", "function_name": fn, "region": region})

    if env.get("KUBERNETES_SERVICE_HOST", ""):
        p = {
            "type": "kubernetes",
            "pod_name": env.get("POD_NAME", "") or host(),  # a pod's hostname is its name
            "namespace": env.get("POD_NAMESPACE", ""),
            "node": env.get("NODE_NAME", ""),
        }
        if not p["namespace"]:
            p["namespace"] = (_read(root, _SERVICE_ACCOUNT_NAMESPACE) or "").strip()
        return _compact(p)

    if os.path.exists(os.path.join(root, ".dockerenv")):
        image = env.get("SENTINEL_IMAGE", "") or env.get("IMAGE", "")
        cid = _find_container_id(_read(root, "proc/self/cgroup") or "")
        if not cid:
            cid = _find_container_id(_read(root, "proc/self/mountinfo") or "", ("/containers/", "/sandboxes/"))
        if not cid:
            cid = host()  # Docker sets the hostname to the short id unless told otherwise
        return _compact({"type": "docker", "container_id": cid, "image": image})

    return _compact(
        {"type": "bare_metal", "hostname": host(), "os": _platform.system().lower(), "pid": os.getpid()}
    )


def _compact(p: Dict[str, object]) -> Dict[str, object]:
    """Drop empty fields, as the Go beacon's omitempty does."""
    return {k: v for k, v in p.items() if v not in ("", 0, None) or k == "type"}
