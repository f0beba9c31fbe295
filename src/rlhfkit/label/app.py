"""`rlhfkit label serve`'s web app (FastAPI): annotator pages, the admin page, the export.

    GET  /a/{token}              the annotator's next pair: prompt, two responses, choose (and rate)
    POST /a/{token}/vote         one answer  → stored in one transaction, then the next pair (303)
    POST /a/{token}/undo         delete this annotator's most recent answer, show that pair again
    GET  /admin/{admin_token}    progress per annotator, agreement, the human evaluation so far
    GET  /admin/{admin_token}/export.jsonl   the preference records `rlhfkit label export` writes

Security, because model output is untrusted HTML and the server holds people's work:
- The token in the path is the credential: a random `secrets.token_urlsafe` per annotator (and
  one for the admin). An unknown token gets 404 and nothing else; an annotator's token only
  ever reaches that annotator's own assignments and votes.
- Cross-site requests: a POST needs an Origin (or, failing that, Referer) equal to this server's
  own origin, and a form token, HMAC(project secret, annotator token), that a page from another
  site cannot read. The Host header must name this server (127.0.0.1/localhost or the bound
  host), which also stops DNS-rebinding pages from reading the annotator pages.
- Every prompt and response goes through Jinja2 with autoescape on; the CSP allows scripts from
  this origin only (no inline script), so even an escaping bug could not run injected code.
- Request bodies over MAX_BODY_BYTES are refused (413) before they are read, and so is a POST
  without a Content-Length (411). Malformed forms get a one-line 400, never a stack trace.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from contextlib import closing
from pathlib import Path
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jinja2
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from rlhfkit.label import db
from rlhfkit.label.results import agreement, export_records, human_evaluation

MAX_BODY_BYTES = 16 * 1024  # a vote is a few hundred bytes
HERE = Path(__file__).parent
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # the token in the URL never leaves in a Referer
    "Cache-Control": "no-store",
}


class Refused(Exception):
    """A request we answer with one line of explanation and a status code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def form_token(secret: str, annotator_token: str) -> str:
    return hmac.new(secret.encode(), b"form:" + annotator_token.encode(), hashlib.sha256).hexdigest()


def _same_origin(request: Request) -> bool:
    """Origin (or Referer) names the scheme, host and port this request was sent to."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == own
    referer = request.headers.get("referer")
    if referer is None:
        return False
    parts = urlsplit(referer)
    return f"{parts.scheme}://{parts.netloc}" == own


def _rating(form: dict[str, str], key: str) -> int | None:
    raw = form.get(key)
    if raw in (None, ""):
        return None
    if not (raw.isascii() and raw.isdecimal()) or not 1 <= int(raw) <= 7:
        raise Refused(400, f"field '{key}' must be a whole number from 1 to 7, got {raw[:20]!r}")
    return int(raw)


@dataclass(frozen=True)
class Project:
    """What every request needs: the project file and its settings (read once, at start-up)."""

    db_path: Path
    secret: str
    admin_token: str
    rate: bool
    guidelines: str
    source: str
    allowed_hosts: frozenset[str] | None  # None: bound to every interface, any Host is served


def _project(request: Request) -> Project:
    return request.app.state.project


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context), status_code=status, headers=SECURITY_HEADERS)


async def in_db(project: Project, fn, *args):
    """fn(connection, *args) in a worker thread, on a connection of its own (SQLite waits for the lock)."""
    def call():
        con = db.connect(project.db_path)
        try:
            return fn(con, *args)
        finally:
            con.close()
    return await run_in_threadpool(call)


async def guard(request: Request, call_next):
    """Host check, then for a POST: a Content-Length within MAX_BODY_BYTES and a same-origin request."""
    host = request.headers.get("host", "").rsplit(":", 1)[0]
    allowed = _project(request).allowed_hosts
    if allowed is not None and host not in allowed:
        return page("message.html", 421, title="Wrong host", message=f"this server does not answer for host {host!r}")
    if request.method == "POST":
        length = request.headers.get("content-length")
        if length is None or not (length.isascii() and length.isdecimal()):
            return page("message.html", 411, title="Refused", message="a POST needs a Content-Length")
        if int(length) > MAX_BODY_BYTES:
            return page("message.html", 413, title="Refused", message=f"request body over {MAX_BODY_BYTES} bytes")
        if not _same_origin(request):
            return page("message.html", 403, title="Refused",
                        message="cross-site request refused (Origin/Referer does not match this server)")
    response = await call_next(request)
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


async def refused(request: Request, err: Refused):
    return page("message.html", err.status, title="Refused" if err.status != 404 else "Not found", message=err.message)


async def store_error(request: Request, err: db.StoreError):
    return page("message.html", 400, title="Refused", message=str(err))


async def _annotator(project: Project, token: str) -> db.Annotator:
    found = await in_db(project, db.annotator_by_token, token)
    if found is None:
        raise Refused(404, "this link is not valid (unknown or stale token): ask the project's admin for yours")
    return found


async def _checked_form(request: Request, who: db.Annotator) -> dict[str, str]:
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception as err:  # noqa: BLE001 - any unparsable body is the client's mistake
        raise Refused(400, f"malformed form: {type(err).__name__}") from None
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    if not hmac.compare_digest(fields.get("form_token", ""), form_token(_project(request).secret, who.token)):
        raise Refused(403, "missing or wrong form token: reload the page and answer again")
    return fields


def _admin_check(project: Project, token: str) -> None:
    if not hmac.compare_digest(token, project.admin_token):
        raise Refused(404, "this link is not valid (unknown or stale token)")


router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def index():
    return page("message.html", title="rlhfkit label", message="open the personal link you were given")


@router.get("/favicon.ico")
async def favicon():
    return Response(status_code=204)


@router.get("/a/{token}", response_class=HTMLResponse)
async def annotate(token: str, request: Request):
    project = _project(request)
    who = await _annotator(project, token)
    current = await in_db(project, db.next_assignment, who.id)
    done, total = await in_db(project, db.progress, who.id)
    context = dict(who=who, done=done, total=total, rate=project.rate, guidelines=project.guidelines,
                   form_token=form_token(project.secret, who.token), scales=db.SCALES,
                   undone=request.query_params.get("undone") is not None)
    if current is None:
        return page("done.html", **context)
    item, flip = current
    sides = [("b", item.response_b), ("a", item.response_a)] if flip else [("a", item.response_a), ("b", item.response_b)]
    return page("annotate.html", item=item, sides=sides, **context)


@router.post("/a/{token}/vote")
async def vote(token: str, request: Request):
    project = _project(request)
    who = await _annotator(project, token)
    form = await _checked_form(request, who)
    raw_item = form.get("item", "")
    if not (raw_item.isascii() and raw_item.isdecimal()):
        raise Refused(400, f"field 'item' must be an item number, got {raw_item[:20]!r}")
    item_id = int(raw_item)
    if not await in_db(project, db.is_assigned, item_id, who.id):
        raise Refused(404, f"item {item_id} is not one of your items")
    choice = form.get("choice", "")
    if choice not in db.CHOICES:
        raise Refused(400, f"field 'choice' must be one of {', '.join(db.CHOICES)}, got {choice[:20]!r}")
    ratings = {key: _rating(form, key) for key in db.RATING_COLUMNS}
    if project.rate and None in ratings.values():
        missing = next(key for key, value in ratings.items() if value is None)
        raise Refused(400, f"field '{missing}': every response needs all three ratings (1–7)")
    await in_db(project, db.add_vote, item_id, who.id, choice, ratings)  # a repeat of a stored vote changes nothing
    return RedirectResponse(f"/a/{token}", status_code=303)


@router.post("/a/{token}/undo")
async def undo(token: str, request: Request):
    project = _project(request)
    who = await _annotator(project, token)
    await _checked_form(request, who)
    undone = await in_db(project, db.undo_last, who.id)
    return RedirectResponse(f"/a/{token}" + ("?undone=1" if undone is not None else ""), status_code=303)


@router.get("/admin/{token}", response_class=HTMLResponse)
async def admin(token: str, request: Request):
    project = _project(request)
    _admin_check(project, token)

    def gather(con):
        return db.assignment_counts(con), db.annotators(con), db.votes(con), db.items(con)

    counts, people, votes, items = await in_db(project, gather)
    base = f"{request.url.scheme}://{request.headers['host']}"
    return page("admin.html", counts=counts, links={p.name: f"{base}/a/{p.token}" for p in people},
                stats=agreement(votes, project.rate, [p.name for p in people]), human=human_evaluation(items, votes),
                items=len(items), source=project.source, token=token, rate=project.rate, scales=db.SCALES)


@router.get("/admin/{token}/export.jsonl")
async def export(token: str, request: Request):
    project = _project(request)
    _admin_check(project, token)
    records = await in_db(project, lambda con: export_records(db.items(con), db.votes(con)))
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return Response(body, media_type="application/jsonl; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="preferences.jsonl"', **SECURITY_HEADERS})


def create_app(db_path: Path, bind_host: str = "127.0.0.1") -> FastAPI:
    """The app for one project file (refused in one line if it is not one); each request opens its own connection."""
    with closing(db.open_project(db_path)) as con:
        settings = {key: db.meta(con, key) for key in ("secret", "admin_token", "rate", "guidelines", "source")}
    # Bound to one address: only requests naming it (or localhost) are answered. Bound to every interface
    # (0.0.0.0 / ::) the server is meant to be reached under names we cannot know, so any Host is taken.
    allowed = None if bind_host in ("0.0.0.0", "::") else frozenset({bind_host, *LOCAL_NAMES})
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.project = Project(db_path, settings["secret"], settings["admin_token"], settings["rate"] == "1",
                                settings["guidelines"], settings["source"], allowed)
    app.middleware("http")(guard)
    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(db.StoreError, store_error)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)
    return app
