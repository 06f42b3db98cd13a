"""The dashboard's web app (Starlette): the runs, one run, one round and a run's files, each page with a live
part that server-sent events tell the browser to fetch again when the store changes; and the guard that keeps
it to loopback, or to holders of the access token when bound to another address."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vibeserve.errors import StoreError
from vibeserve.report.formats import template_env
from vibeserve.report.tables import issue_rows, notices, role_table, role_total, run_summary
from vibeserve.store import steering
from vibeserve.ui.chart import trajectory_svg
from vibeserve.ui.data import (
    PathRefused,
    RunSource,
    folder_listing,
    lineage,
    open_readonly,
    read_text,
    round_page,
    round_views,
    served_path,
    signature,
)

HERE = Path(__file__).parent
TOKEN_COOKIE = "vibeserve_ui_token"
KEEPALIVE_S = 15.0
TABLE_ROUNDS = 100  # rows of the run page's round table unless `?rounds=all`
# Scripts and styles come from /static only: a run's text that slipped past escaping still could not run.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8765`` -> ``::1``."""
    return host[1:].split("]")[0] if host.startswith("[") else host.split(":")[0]


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Guard:
    """ASGI middleware in front of every route. Without a token (bound to loopback) it refuses requests whose
    Host is not loopback, so a web page cannot reach the dashboard by DNS rebinding. With a token, every
    request carries it: ``?token=`` (then kept in a cookie), ``Authorization: Bearer``, or the cookie; none
    is 401, a wrong one 403. Every response gets headers that forbid inline scripts and framing."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        set_cookie = False
        if self.token is None:
            if not is_loopback(_hostname(request.headers.get("host", ""))):
                await PlainTextResponse("this dashboard answers on loopback addresses only", 400)(scope, receive, send)
                return
        else:
            bearer = request.headers.get("authorization", "")
            given = (request.query_params.get("token") or (bearer[7:] if bearer.startswith("Bearer ") else None)
                     or request.cookies.get(TOKEN_COOKIE))
            if not given:
                await PlainTextResponse("this dashboard needs its access token: open the address `vibeserve ui` "
                                        "printed, with ?token=", 401)(scope, receive, send)
                return
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                await PlainTextResponse("wrong access token", 403)(scope, receive, send)
                return
            set_cookie = request.query_params.get("token") is not None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if set_cookie:
                    headers.append("Set-Cookie", f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _env() -> Environment:
    return template_env(HERE / "templates", autoescape=True)


def _page(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> HTMLResponse:
    """The page, or with ``?partial=1`` only its live block (what the page fetches after an event)."""
    template = request.app.state.env.get_template(name)
    if request.query_params.get("partial") == "1":
        html = "".join(template.blocks["live"](template.new_context(ctx)))
    else:
        html = template.render(ctx)
    return HTMLResponse(html, status, headers={"Cache-Control": "no-store"})


def _not_found(request: Request, what: str) -> HTMLResponse:
    return _page(request, "missing.html.j2", {"what": what, "events": ""}, 404)


def index(request: Request) -> Response:
    source: RunSource = request.app.state.source
    runs = []
    for run_id, run_dir in source.runs().items():
        try:
            store = open_readonly(run_dir)
        except StoreError as e:
            runs.append({"id": run_id, "error": str(e), "s": None})
            continue
        try:
            runs.append({"id": run_id, "error": "", "s": run_summary(store)})
        except (StoreError, sqlite3.DatabaseError) as e:  # a run still being created: shown, not fatal
            runs.append({"id": run_id, "error": f"cannot be read yet: {e}", "s": None})
        finally:
            store.close()
    return _page(request, "index.html.j2", {"runs": runs, "runs_dir": str(source.runs_dir),
                                             "named": bool(source.named), "events": "/events"})


def _run_dir(request: Request) -> Path | None:
    return request.app.state.source.get(request.path_params["run_id"])


def run(request: Request) -> Response:
    run_dir = _run_dir(request)
    if run_dir is None:
        return _not_found(request, f"no run {request.path_params['run_id']!r} here")
    store = open_readonly(run_dir)
    try:
        s = run_summary(store)
        # Past TABLE_ROUNDS the table shows the latest ones (the charts show all): a 1,000-row table is
        # megabytes of HTML re-sent on every change. `?rounds=all` shows every row.
        numbers = [r["round"] for r in store.query("SELECT round FROM rounds ORDER BY round")]
        every = request.query_params.get("rounds") == "all" or len(numbers) <= TABLE_ROUNDS
        shown = set(numbers if every else numbers[-TABLE_ROUNDS:])
        views = round_views(store, diff_cache=request.app.state.diff_cache, detail_rounds=shown)
        _, edges = lineage(store)
        roles = role_table(store)
        link = f"/runs/{s.run_id}" if s.run_id == run_dir.name else f"/runs/{run_dir.name}"
        ctx = {
            "id": run_dir.name, "s": s, "b": s.benchmark, "notices": notices(s), "views": views,
            "table": [v for v in views if v.row.round in shown],
            "edges": edges, "roles": roles, "role_total": role_total(roles), "issues": issue_rows(store),
            "steering": steering.entries(store),
            "by_round": trajectory_svg(s, views, edges, "round", link),
            "by_wall": trajectory_svg(s, views, edges, "wall", link),
            "events": f"/runs/{run_dir.name}/events",
        }
    finally:
        store.close()
    return _page(request, "run.html.j2", ctx)


def round_(request: Request) -> Response:
    run_dir = _run_dir(request)
    if run_dir is None:
        return _not_found(request, f"no run {request.path_params['run_id']!r} here")
    n = request.path_params["n"]
    store = open_readonly(run_dir)
    try:
        page = round_page(store, n)
        s = run_summary(store)
    finally:
        store.close()
    if page is None:
        return _not_found(request, f"run {run_dir.name} has no round {n}")
    return _page(request, "round.html.j2", {"id": run_dir.name, "n": n, "p": page, "s": s, "b": s.benchmark,
                                             "events": f"/runs/{run_dir.name}/events"})


def files(request: Request) -> Response:
    run_dir = _run_dir(request)
    if run_dir is None:
        return _not_found(request, f"no run {request.path_params['run_id']!r} here")
    rel = request.query_params.get("path", "")
    try:
        path = served_path(run_dir, rel)
    except PathRefused as e:
        return PlainTextResponse(f"refused: {e}", 403)
    if not path.exists():
        return _not_found(request, f"run {run_dir.name} has no {rel}")
    ctx: dict[str, Any] = {"id": run_dir.name, "path": rel, "events": f"/runs/{run_dir.name}/events",
                           "listing": None, "text": "", "cut": False}
    if path.is_dir():
        ctx["listing"] = folder_listing(run_dir, path)
    else:
        text, cut = read_text(path)
        if request.query_params.get("raw") == "1":
            if path.suffix == ".svg":  # a profile's flame graph, drawn (the CSP lets no script in it run)
                return Response(path.read_bytes(), media_type="image/svg+xml", headers={"Cache-Control": "no-store"})
            return PlainTextResponse(text, headers={"Cache-Control": "no-store"})
        ctx.update(text=text, cut=cut)
    return _page(request, "file.html.j2", ctx)


async def _changes(request: Request, dirs: Callable[[], list[Path]]) -> AsyncIterator[str]:
    """``change`` whenever the stores' signature moves, polled every ``poll_s``; a comment now and then keeps
    proxies from closing the stream."""
    poll = request.app.state.poll_s
    last = signature(dirs())
    yield "retry: 2000\nevent: ready\ndata: {}\n\n"
    quiet = 0.0
    while not await request.is_disconnected():
        await asyncio.sleep(poll)
        now = signature(dirs())
        if now != last:
            last, quiet = now, 0.0
            yield "event: change\ndata: {}\n\n"
        else:
            quiet += poll
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": still here\n\n"


def _sse(request: Request, dirs: Callable[[], list[Path]]) -> StreamingResponse:
    return StreamingResponse(_changes(request, dirs), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def events(request: Request) -> Response:
    source: RunSource = request.app.state.source
    return _sse(request, lambda: list(source.runs().values()))


async def run_events(request: Request) -> Response:
    run_dir = _run_dir(request)
    if run_dir is None:
        return PlainTextResponse("no such run", 404)
    return _sse(request, lambda: [run_dir])


def create_app(source: RunSource, token: str | None = None, poll_s: float = 1.0) -> ASGIApp:
    """The dashboard over ``source``; ``token`` None means loopback only, otherwise every request needs it."""
    app = Starlette(routes=[
        Route("/", index),
        Route("/events", events),
        Route("/runs/{run_id}", run),
        Route("/runs/{run_id}/events", run_events),
        Route("/runs/{run_id}/rounds/{n:int}", round_),
        Route("/runs/{run_id}/files", files),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ])
    app.state.source, app.state.env, app.state.poll_s = source, _env(), poll_s
    app.state.diff_cache = {}  # (start, candidate) -> its diffstat: commits never change, so neither does it
    return Guard(app, token)


def serve(source: RunSource, host: str = "127.0.0.1", port: int = 8765,
          say: Callable[[str], None] = print) -> None:
    """Serve the dashboard until interrupted. Bound to anything but loopback, it makes a random access token,
    says it once (inside the address to open) and refuses every request without it."""
    import uvicorn

    token = None if is_loopback(host) else new_token()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if token:
        say(f"vibeserve ui on {url} (read-only); open {url}?token={token}")
        say("every request needs this token; anyone who has it can read these runs")
    else:
        say(f"vibeserve ui on {url} (read-only; Ctrl-C stops it)")
    uvicorn.run(create_app(source, token), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=1)
