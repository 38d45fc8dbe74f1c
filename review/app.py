"""The review app (Starlette): pages, edit actions, Accept, thumbnails.

Every edit goes through orchestration.editing, the code `groups edit` runs; every route
under ``/t/<tenant>/`` first checks that the session may read that tenant.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import botocore.exceptions
import dagster as dg
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from orchestration.editing import EditConflict, EditRequest, record_edit
from orchestration.environment import s3_from_env
from orchestration.errors import UserError
from orchestration.partitions import BatchKey
from review.auth import SESSION_COOKIE, SESSION_SECONDS, Access, Authenticator, csrf_ok
from review.batches import (
    BatchCache,
    NotFound,
    batch_summary,
    batch_view,
    display_name,
    tenant_batches,
)
from review.runs import Publisher

HERE = Path(__file__).parent
#: Product cards on one page: bounds the HTML of a huge batch (thumbnails load lazily).
PRODUCTS_PER_PAGE = 40
BATCHES_PER_PAGE = 50
log = logging.getLogger("review")


def create_app(
    instance: dg.DagsterInstance | None = None, auth: Authenticator | None = None
) -> Starlette:
    """The app; ``instance`` defaults to DAGSTER_HOME's, opened at startup."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals["display_name"] = display_name
    templates.env.filters["pct"] = lambda v: "edited" if v is None else f"{v:.0%}"
    cache = BatchCache()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        own = instance is None
        app.state.instance = dg.DagsterInstance.get() if own else instance
        app.state.auth = auth or Authenticator.from_env()
        app.state.publisher = Publisher(app.state.instance)
        try:
            yield
        finally:
            app.state.publisher.close()
            if own:
                app.state.instance.dispose()

    def access(request: Request) -> Access:
        found = request.app.state.auth.access(request.cookies, request.headers)
        if found is None:
            raise HTTPException(401, "sign in first")
        return found

    def batch_of(request: Request) -> tuple[Access, BatchKey]:
        who = access(request)
        tenant = request.path_params["tenant"]
        try:
            batch = BatchKey(tenant, request.path_params.get("batch", "x"))
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from exc
        if not who.allows(tenant):
            # Same answer whether or not the tenant exists: nothing to learn by probing.
            raise HTTPException(403, f"this session may not read tenant {tenant!r}")
        return who, batch

    def check_post(request: Request, who: Access | None, form) -> None:
        origin = request.headers.get("origin")
        if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise HTTPException(403, "cross-site request refused (Origin does not match)")
        if who is not None and not csrf_ok(who, str(form.get("csrf", ""))):
            raise HTTPException(403, "missing or stale form token: reload the page and retry")

    def page(request: Request, name: str, context: dict, status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    async def login_form(request: Request) -> Response:
        return page(request, "login.html", {"error": None, "next": _safe_next(request)})

    async def login(request: Request) -> Response:
        form = await request.form()
        check_post(request, None, form)
        sid = request.app.state.auth.sign_in(str(form.get("token", "")), str(form.get("who", "")))
        if sid is None:
            log.warning("sign-in refused (unknown token) from %s", request.client)
            context = {"error": "unknown token", "next": _safe_next(request, form)}
            return page(request, "login.html", context, status=401)
        response = RedirectResponse(_safe_next(request, form), status_code=303)
        response.set_cookie(SESSION_COOKIE, sid, max_age=SESSION_SECONDS, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")  # fmt: skip
        return response

    async def logout(request: Request) -> Response:
        form = await request.form()
        check_post(request, access(request), form)
        request.app.state.auth.sign_out(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    def index(request: Request) -> Response:
        who = access(request)
        tenant = request.path_params.get("tenant")
        if tenant is not None:
            who, _ = batch_of(request)
        state = request.app.state
        listed = tenant_batches(state.instance, who.allows)
        if tenant is not None:
            listed = {tenant: listed.get(tenant, [])}
        number = _page_number(request)
        tenants = {
            t: {
                "summaries": [batch_summary(state.instance, b) for b in
                              batches[(number - 1) * BATCHES_PER_PAGE : number * BATCHES_PER_PAGE]],
                "pages": max(1, math.ceil(len(batches) / BATCHES_PER_PAGE)),
            }
            for t, batches in listed.items()
        }  # fmt: skip
        return page(request, "index.html", {"who": who, "tenants": tenants, "page": number})

    def batch_page(request: Request, error: str | None = None, status: int = 200) -> Response:
        who, batch = batch_of(request)
        state = request.app.state
        try:
            tables = cache.tables(state.instance, batch)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        view = batch_view(batch, tables)
        pages = max(1, math.ceil(len(view.products) / PRODUCTS_PER_PAGE))
        number = min(_page_number(request), pages)
        shown = view.products[(number - 1) * PRODUCTS_PER_PAGE : number * PRODUCTS_PER_PAGE]
        run_id = request.query_params.get("run") or state.publisher.running(batch)
        context = {
            "who": who,
            "batch": batch,
            "base": f"/t/{quote(batch.tenant)}/b/{quote(batch.batch)}",
            "view": view,
            "products": shown,
            "page": number,
            "pages": pages,
            "per_page": PRODUCTS_PER_PAGE,
            "tables": tables,
            "summary": batch_summary(state.instance, batch),
            "error": error,
            "done": request.query_params.get("done"),
            "run_id": run_id,
        }
        return page(request, "batch.html", context, status=status)

    async def edit(request: Request) -> Response:
        who, batch = batch_of(request)
        form = await request.form()
        check_post(request, who, form)
        try:
            edit_request = _edit_request(form, who)
            tables = await run_in_threadpool(cache.tables, request.app.state.instance, batch)
            await run_in_threadpool(
                record_edit, batch, edit_request, str(form.get("version", "")),
                tables.clusters, request.app.state.instance, shared_s3=True,
            )  # fmt: skip
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except EditConflict as exc:
            return await run_in_threadpool(batch_page, request, str(exc), 409)
        except UserError as exc:
            return await run_in_threadpool(batch_page, request, str(exc), 400)
        target = f"{request.url.path.rsplit('/', 1)[0]}?{urlencode({'done': edit_request.op})}"
        return RedirectResponse(target, status_code=303)

    async def accept(request: Request) -> Response:
        who, batch = batch_of(request)
        form = await request.form()
        check_post(request, who, form)
        state = request.app.state
        try:
            await run_in_threadpool(cache.tables, state.instance, batch)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        running = state.publisher.running(batch)
        if running:
            message = f"a publish run ({running[:8]}) is already in progress for this batch"
            return await run_in_threadpool(batch_page, request, message, 409)
        run_id = state.publisher.start(batch, who.who)
        base = request.url.path.rsplit("/", 1)[0]
        return RedirectResponse(f"{base}?{urlencode({'run': run_id})}", status_code=303)

    def run_status(request: Request) -> Response:
        _, batch = batch_of(request)
        try:
            status = request.app.state.publisher.status(batch, request.path_params["run_id"])
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        return JSONResponse(status, headers={"Cache-Control": "no-store"})

    def image(request: Request) -> Response:
        _, batch = batch_of(request)
        file, kind = request.path_params["file"], request.path_params["kind"]
        if kind not in ("thumb", "original"):
            raise HTTPException(404, f"no such page {kind!r}")
        try:
            tables = cache.tables(request.app.state.instance, batch)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        found = (tables.thumb if kind == "thumb" else tables.original).get(file)
        if found is None:
            raise HTTPException(404, f"no {kind} of {file!r} in {batch.partition_key}")
        # An image type the pipeline sniffed or wrote: an upload never runs as a page.
        bucket, key, media = found
        try:
            obj = s3_from_env(shared=True).get_client().get_object(Bucket=bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            raise HTTPException(404, f"{kind} of {file!r} is missing on S3") from exc
        headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response(obj["Body"].read(), media_type=media, headers=headers)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401 and request.method == "GET" and _wants_html(request):
            return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", 303)
        if _wants_html(request):
            context = {"status": exc.status_code, "message": exc.detail}
            return page(request, "error.html", context, status=exc.status_code)
        return PlainTextResponse(exc.detail, status_code=exc.status_code)

    routes = [
        Route("/healthz", lambda r: PlainTextResponse("ok")),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", index),
        Route("/t/{tenant}", index),
        Route("/t/{tenant}/b/{batch}", batch_page),
        Route("/t/{tenant}/b/{batch}/edit", edit, methods=["POST"]),
        Route("/t/{tenant}/b/{batch}/accept", accept, methods=["POST"]),
        Route("/t/{tenant}/b/{batch}/runs/{run_id}", run_status),
        Route("/t/{tenant}/b/{batch}/{kind:str}/{file:path}", image),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(ServerTiming)],
                    exception_handlers={HTTPException: http_error})  # fmt: skip

    return app


class ServerTiming:
    """Adds ``Server-Timing: app;dur=<ms>`` to every answer (bench/review_page.py reads it)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                headers = [*message.get("headers", []),
                           (b"server-timing", f"app;dur={elapsed:.1f}".encode())]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)


def _edit_request(form, who: Access) -> EditRequest:
    """The form's buttons name the action and its group (HTML works without JavaScript)."""
    files = tuple(str(f) for f in form.getlist("files"))
    common = {"who": who.who, "why": str(form.get("why", "")).strip()}
    if form.get("rename"):
        group = str(form["rename"])
        return EditRequest("rename", **common, group=group, name=str(form.get(f"name-{group}", "")))
    if form.get("split"):
        return EditRequest("split", **common, group=str(form["split"]), files=files)
    if form.get("move_to"):
        if len(files) != 1:
            raise UserError(f"move: select exactly one photo to move ({len(files)} selected)")
        return EditRequest("move", **common, file=files[0], to=str(form["move_to"]))
    op = str(form.get("op", ""))
    if op == "merge":
        return EditRequest("merge", **common, groups=tuple(str(g) for g in form.getlist("groups")))
    if op == "undo":
        return EditRequest("undo", **common)
    raise UserError(f"unknown action {op!r}")


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError as exc:
        raise HTTPException(400, "page must be a whole number") from exc


def _safe_next(request: Request, form=None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    target = str((form or {}).get("next") or request.query_params.get("next") or "/")
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")
