"""The console's routes (Flask): each page asks the daemon on the logged-in
person's behalf, builds its tables (acctd/web/pages.py) and renders them,
or answers one of them as CSV or all of them as JSON (`?format=csv&table=`,
`?format=json`, with the page's own query string: period and filters are
in the URL, so a page can be shared)."""

from __future__ import annotations

import re
import secrets
import threading
import time
from urllib.parse import urlencode

from flask import Flask, Response, abort, g, redirect, render_template, request, url_for

from acctd.control import client, commands
from acctd.errors import (AcctError, BadRequest, Conflict, NotFound, NotRunning,
                          PermissionDenied)
from acctd.web import metrics, pages, portal
from acctd.web.auth import COOKIE, PRE_COOKIE, Sessions, same
from acctd.web.tables import TEXT, Table, as_json

RATE_GAP = 0.5      # seconds between the two rate snapshots of a cold overview
RATE_STALE = 60.0   # an older previous snapshot is taken again
MAX_LIMIT = 100     # top-N at most


class Daemon:
    """The daemon's control socket, asked on someone's behalf."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def __call__(self, cmd: str, token: str | None = None, /, **args):
        return client.call(self.socket_path, cmd, timeout=30.0, as_token=token, **args)


class RateSampler:
    """The last `rates` snapshot, for rates between two page loads (the
    gateway's, shared by every viewer)."""

    def __init__(self):
        self.prev: dict | None = None
        self.lock = threading.Lock()

    def pair(self, ask) -> tuple[dict | None, dict]:
        with self.lock:
            prev = self.prev
            if prev is None or time.monotonic() - prev["_at"] > RATE_STALE:
                prev = ask() | {"_at": time.monotonic()}
                time.sleep(RATE_GAP)
            cur = ask() | {"_at": time.monotonic()}
            self.prev = cur
            return prev, cur


def create_app(daemon, secure: bool = False, metrics_allow: tuple = (),
               metrics_top_units: int = 0) -> Flask:
    """daemon(cmd, token, **args) answers control commands (Daemon above);
    secure: served behind TLS (cookies get Secure); metrics_allow: the
    networks that may scrape /metrics without logging in (acctd/web/metrics.py),
    metrics_top_units: that many units' month gauges there."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    sessions = Sessions()
    sampler = RateSampler()
    app.extensions["acctd"] = {"sessions": sessions, "daemon": daemon}

    def ask(cmd: str, **args):
        return daemon(cmd, g.session.token, **args)

    @app.template_global()
    def table_link(t: Table, key: str, row: dict) -> str | None:
        """Where a table's cell links to: a unit's or an account's page."""
        v = row.get(key)
        if v and key in ("unit", "name") and t.name in ("top_units", "units", "blocked",
                                                        "top_addrs"):
            return url_for("unit", name=v)
        if v and key == "name" and t.name == "accounts":
            return url_for("account", name=v)
        if v and key == "unit" and t.name == "account_units":
            return url_for("unit", name=v)
        if v and key == "number" and t.name == "invoices":
            return url_for("invoice", name=row["account"], month=row["month"])
        return None

    def cookie(resp: Response, name: str, value: str, **kw) -> None:
        resp.set_cookie(name, value, httponly=True, samesite="Strict",
                        secure=secure or request.is_secure, path="/", **kw)

    @app.before_request
    def who():
        g.session = sessions.get(request.cookies.get(COOKIE))
        if request.endpoint in ("login", "hotspot", "static"):
            return None
        if request.endpoint == "metrics":  # a scraper has no login: its address is its right
            if not metrics.allowed(request.remote_addr, metrics_allow):
                abort(403, "this address may not scrape /metrics (acctd-web --metrics-allow)")
            return None
        if g.session is None:
            return redirect(url_for("login", next=request.full_path.rstrip("?")))
        if request.method == "POST" and not same(request.form.get("csrf"), g.session.csrf):
            abort(403, "the form is stale or not from this console (CSRF): reload the page")
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(AcctError)
    def daemon_said(e: AcctError):
        status = (403 if isinstance(e, PermissionDenied) else 404 if isinstance(e, NotFound)
                  else 400 if isinstance(e, BadRequest) else 409 if isinstance(e, Conflict)
                  else 503 if isinstance(e, NotRunning) else 502)
        return render_template("error.html", status=status, message=str(e)), status

    @app.errorhandler(403)
    def forbidden(e):
        return render_template("error.html", status=403, message=e.description), 403

    # -- logging in and out ------------------------------------------------------------

    def checked_form() -> str:
        """A login form posted from this client: its CSRF and the client's
        failed attempts checked; the client's address."""
        if not sessions.login_csrf_ok(request.cookies.get(PRE_COOKIE), request.form.get("csrf")):
            abort(403, "the form is stale (CSRF): reload the page and try again")
        addr = request.remote_addr or "?"
        sessions.by_ip.check(addr)
        return addr

    def checked_login(name: str, password: str, kind: str) -> dict:
        """The daemon's web-login for a form posted from this client."""
        addr = checked_form()
        try:
            return daemon("web-login", None, name=name, password=password, unit=kind == "unit",
                          account=kind == "account")
        except PermissionDenied:
            sessions.by_ip.failed(addr)
            raise

    def form_page(template: str, status: int = 200, **context) -> Response:
        """A page with a login form, its CSRF bound to a pre-login cookie."""
        return pre_login(lambda csrf: render_template(template, csrf=csrf, **context), status)

    def pre_login(render, status: int) -> Response:
        pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
        resp = Response(render(sessions.login_csrf(pre)), status)
        cookie(resp, PRE_COOKIE, pre)
        return resp

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "GET":
            return form_page("login.html")
        try:
            reply = checked_login(request.form.get("name", ""), request.form.get("password", ""),
                                  request.form.get("kind", "user"))
        except PermissionDenied as e:
            return form_page("login.html", 403, error=str(e))
        sid = sessions.start(reply["token"], reply["name"], reply["level"], reply["unit"],
                             reply.get("account"))
        home = (url_for("unit", name=reply["unit"]) if reply["unit"]
                else url_for("account") if reply.get("account")
                else _local(request.args.get("next")) or url_for("overview"))
        resp = redirect(home)
        cookie(resp, COOKIE, sid)
        resp.delete_cookie(PRE_COOKIE, path="/")
        return resp

    @app.route("/hotspot", methods=["GET", "POST"])
    def hotspot():
        """A campus or hotspot login page (NeTAMS login.cgi, acctd/web/portal.py,
        the same page as [captive]'s): the unit logs in (or out) from the
        client's address with its login password."""
        addr = request.remote_addr
        out = request.form.get("action") == "logout"

        def shown(reply: dict | None, status: int = 200) -> Response:
            return pre_login(lambda csrf: portal.render(
                url_for("hotspot"), addr, reply, out, csrf,
                url_for("static", filename="console.css")), status)
        if request.method == "GET":
            return shown(None)
        try:
            checked_form()
        except PermissionDenied as e:
            return shown({"ok": False, "message": str(e)}, 403)
        reply = daemon("portal-login", None, unit=request.form.get("user", ""),
                       password=request.form.get("password", ""), ip=addr or "", logout=out)
        if reply["status"] in (403, 429):
            sessions.by_ip.failed(addr or "?")
        return shown(reply, reply["status"])

    @app.post("/logout")
    def logout():
        s = sessions.end(request.cookies.get(COOKIE))
        if s is not None:
            try:
                daemon("web-logout", None, token=s.token)  # as the console: any token it holds
            except AcctError:
                pass  # the daemon forgot it already (restarted)
        resp = redirect(url_for("login"))
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # as the console's own viewer [[user]], not on anyone's behalf
    exporter = metrics.Metrics(lambda cmd, **a: daemon(cmd, None, **a), metrics_top_units)

    @app.get("/metrics", endpoint="metrics")
    def metrics_page():
        body, kind = exporter.render(request.headers.get("Accept"))
        return Response(body, content_type=kind)

    # -- pages ---------------------------------------------------------------------------

    def page(template: str, title: str, built: dict, **context):
        """The page, or one table as CSV, or every table as JSON."""
        fmt = request.args.get("format")
        tables = built["tables"]
        if fmt == "json":
            return Response(as_json(tables), mimetype="application/json")
        if fmt == "csv":
            name = request.args.get("table")
            t = next((t for t in tables if t.name == name), None)
            if t is None:
                abort(404)
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{title}-{t.name}")  # a header, not markup
            return Response(t.csv(), mimetype="text/csv", headers={
                "Content-Disposition": f'attachment; filename="{safe}.csv"'})
        return render_template(template, title=title, built=built, download=download,
                               args=args, session=g.session, **context)

    def args(key: str, value) -> str:
        """This page's query string with one value changed: a shareable link."""
        kept = {k: v for k, v in request.args.items() if k not in ("format", "table")}
        return urlencode(kept | {key: value})

    def download(table: str, fmt: str) -> str:
        args = {k: v for k, v in request.args.items() if k not in ("format", "table")}
        args |= {"format": fmt} | ({"table": table} if fmt == "csv" else {})
        return f"{request.path}?{urlencode(args)}"

    @app.get("/")
    def overview():
        if g.session.unit is not None:
            return redirect(url_for("unit", name=g.session.unit))
        if g.session.account is not None:
            return redirect(url_for("account"))
        period = _choice(request.args.get("period"), pages.PERIODS, "month")
        back = _int(request.args.get("back"), 0, 0, 1000)
        limit = _int(request.args.get("limit"), 10, 1, MAX_LIMIT)
        prev, cur = sampler.pair(lambda: ask("rates"))
        totals = {p: ask("top-units", period=p, limit=1) for p in pages.PERIODS}
        top = ask("top-units", period=period, back=back, limit=limit)
        tops = {by: ask("top-by", by=by, period=period, back=back, limit=limit)
                for by in ("addr", "port", "vlan")}
        built = pages.overview(ask("status"), pages.top_rates(prev, cur, limit), totals, top,
                               ask("units", sys_policy=True), limit, tops)
        return page("overview.html", "overview", built, period=period, back=back, limit=limit)

    @app.get("/units")
    def units():
        q = request.args.get("q") or None
        rows = ask("units", name=q)
        shown = rows[:500]
        t = Table("units", f"Units ({len(rows)}{', first 500' if len(rows) > 500 else ''})",
                  [("name", "unit", TEXT), ("type", "type", TEXT), ("addrs", "addresses", TEXT),
                   ("parents", "groups", TEXT), ("sys_policy", "blocked", TEXT)], shown)
        return page("units.html", "units", {"tables": [t]}, q=q or "")

    @app.get("/unit/<name>")
    def unit(name: str):
        view = _choice(request.args.get("view"), pages.VIEWS, "day")
        back = _int(request.args.get("back"), 0, 0, 1000)
        series = ask("series", unit=name, view=view, back=back)
        previous = ask("series", unit=name, view=view, back=back + 1)
        quota = ask("quota-show", unit=name)
        totals = ask("list", unit=name)
        staff = not g.session.subscriber
        sessions_ = ask("session-list", user=name, limit=20) if staff else None
        flows = None
        if staff and any(m == name for m in _monitored(ask("monitor-show"))):
            flows = ask("monitor-query", unit=name, top=20)
        built = pages.unit(series, previous, quota, totals, sessions_, flows)
        return page("unit.html", f"unit-{name}", built, name=name, view=view, back=back,
                    staff=staff)

    @app.post("/unit/<name>/block")
    def block(name: str):
        word = _choice(request.form.get("action"), ("sys-deny", "sys-allow"), None)
        if word is None:
            abort(400)
        ask("sys-policy", unit=name, policy=word)
        return redirect(url_for("unit", name=name))

    @app.get("/sessions")
    def sessions_page():
        logins = pages.optional(lambda: ask("login-show"))
        vpn = pages.optional(lambda: ask("openvpn-clients"))
        built = pages.sessions(ask("session-list", open=True, limit=500), logins, vpn,
                               ask("status"))
        return page("sessions.html", "sessions", built)

    @app.get("/account")
    def account():
        """Billing's accounts, or one; a holder's own (the daemon refuses them another)."""
        holder = g.session.account
        if holder is None and ("billing-plan" not in commands.REGISTRY
                               or not pages.billing_configured(ask)):
            return page("account.html", "account", {"tables": []}, billing=False, name=None)
        name = request.args.get("name") or holder
        reply = ask("billing-account", account=name, full=bool(name))
        ledger = plans = bills = None
        if name:
            ledger = ask("billing-ledger", account=name)
            plan = reply.get("account", {}).get("plan")
            if plan is not None:
                plans = pages.optional(lambda: ask("billing-plan", plan=plan))
            bills = pages.optional(lambda: ask("billing-invoices", account=name))
        return page("account.html", "account", pages.account(reply, ledger, plans, bills),
                    billing=True, name=name, holder=holder)

    @app.get("/account/<name>/invoice/<month>")
    def invoice(name: str, month: str):
        """One invoice as its text, to keep (the invoicing service's words)."""
        doc = ask("billing-invoice", account=name, month=month)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"invoice-{doc['number']}")
        return Response(doc["text"], mimetype="text/plain", headers={
            "Content-Disposition": f'attachment; filename="{safe}.txt"'})

    @app.post("/account/beblock")
    def beblock():
        """The holder blocks their own account (NeTAMS beblock), or lifts that block."""
        action = _choice(request.form.get("action"), ("beblock", "unblock"), None)
        name = g.session.account or request.form.get("name")
        if action is None or not name:
            abort(400)
        ask("billing-beblock", account=name, undo=action == "unblock")
        return redirect(url_for("account") if g.session.account else
                        url_for("account", name=name))

    return app


def _monitored(reply: dict) -> list[str]:
    return [u["name"] for u in reply.get("units", [])]


def _choice(v, allowed, default):
    return v if v in allowed else default


def _int(v, default: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(v)))
    except (TypeError, ValueError):
        return default


def _local(path: str | None) -> str | None:
    """Only a path on this console: never an open redirect."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return None
