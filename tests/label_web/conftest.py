"""The web app's tests: a small labelling project with hostile strings in it, an in-process client,
and (for the server and browser tests) a real uvicorn process on 127.0.0.1.

Helpers are reached through the `kit` fixture (this directory's conftest cannot be imported under
pytest's importlib mode)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from rlhfkit.label import db
from rlhfkit.label.app import create_app

ORIGIN = "http://127.0.0.1:8765"
XSS_PROMPT = "<script>document.title='pwned'</script> Tell me"
XSS_RESPONSE = '<img src=x onerror="alert(1)"> hello'


def sample_items(n: int = 6) -> list[db.Item]:
    """Every prompt and every A response carries markup that would run if it were not escaped."""
    return [db.Item(i + 1, f"{XSS_PROMPT} {i + 1}:", f"{XSS_RESPONSE} A{i + 1}", f" answer B{i + 1}", "sft", "ppo", i + 1)
            for i in range(n)]


def make_project(tmp_path: Path, *, annotators=("ann", "bob"), overlap=2, rate=False, n=6) -> Path:
    path = tmp_path / "labels.sqlite"
    db.create(path, sample_items(n), list(annotators), overlap, rate=rate, guidelines="Be <b>fair</b>.", source="test")
    return path


def tokens(path: Path) -> tuple[dict[str, str], str]:
    con = db.open_project(path)
    try:
        return {a.name: a.token for a in db.annotators(con)}, db.meta(con, "admin_token")
    finally:
        con.close()


def form_of(html: str) -> dict[str, str]:
    """The hidden fields of the vote form on an annotator page."""
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html)[:2])


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


@pytest.fixture
def client(project):
    with TestClient(create_app(project), base_url=ORIGIN, follow_redirects=False) as c:
        yield c


@pytest.fixture
def kit():
    return SimpleNamespace(ORIGIN=ORIGIN, XSS_PROMPT=XSS_PROMPT, XSS_RESPONSE=XSS_RESPONSE, make_project=make_project,
                           tokens=tokens, form_of=form_of, sample_items=sample_items)


class Server:
    """`rlhfkit label serve --db PATH` as a real process on 127.0.0.1 (start, kill -9, start again)."""

    def __init__(self, db_path: Path, log: Path):
        self.db_path, self.log = db_path, log
        with socket.socket() as s:  # a free port, chosen once so a restart keeps the URLs
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "a") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rlhfkit.cli", "label", "serve", "--db", str(self.db_path), "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"label server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/favicon.ico", timeout=1).status_code == 204:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"label server did not answer within 30 s: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def serve(tmp_path):
    """serve(db_path) -> a started Server; every server is stopped after the test."""
    servers: list[Server] = []

    def start(db_path: Path) -> Server:
        server = Server(db_path, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
