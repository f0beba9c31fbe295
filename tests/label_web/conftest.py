"""The web app's tests: a small labelling project with hostile strings in it, an in-process client,
and (for the server and browser tests) a real uvicorn process on 127.0.0.1.

Helpers are reached through the `kit` fixture (this directory's conftest cannot be imported under
pytest's importlib mode)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

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
