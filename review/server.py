"""Start the review app: alone (``python -m orchestration review``) or beside Dagster."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time

from orchestration.local_s3 import REPO_ROOT

#: Used when REVIEW_TOKENS is unset: one local operator token (every tenant), 0600.
LOCAL_TOKEN_FILE = REPO_ROOT / ".local" / "review-token"


def local_tokens() -> str:
    """REVIEW_TOKENS for a local stack: a token made once, kept owner-readable only."""
    path = LOCAL_TOKEN_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return f"*:{path.read_text().strip()}"


def serve(host: str, port: int) -> None:
    """Run the app in this process until interrupted."""
    import uvicorn

    from review.app import create_app
    from review.auth import Authenticator

    auth = Authenticator.from_env(default_tokens=local_tokens())
    uvicorn.run(create_app(auth=auth), host=host, port=port, log_level="info",
                proxy_headers=False)  # fmt: skip


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once ``url`` answers; RuntimeError if the process exits or time runs out."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the review app exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"the review app did not answer at {url} within {timeout:.0f} s")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
