"""Static HTML reports (NeTAMS `service html`, `acctctl html`): the
console's tables (acctd/web/pages.py) written as self-contained pages for
any web server: index.html (totals, the top N units of the day, month and
year, the blocked units, health), one page per group and per unit (its
month as a uPlot chart, the vendored script and styles inlined), each with
its tables' exact numbers as JSON in the page; with account-pages, one
page per billing account (its balance, units, ledger, plan and invoices,
each invoice's text beside it); and .htaccess files when asked (operators
see everything, a unit or an account holder only their own pages)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re

from acctd.config.schema import Invalid
from acctd.config.schema import Table as Settings
from acctd.config.schema import boolean, choice, file_path, integer, setting, string
from acctd.errors import BadRequest

STATIC = os.path.join(os.path.dirname(__file__), "static")
PERIODS = ("day", "month", "year")
_SAFE = re.compile(r"^[A-Za-z0-9._@-]+$")   # a unit's name that can be its file's


def check_client_pages(v, ctx):
    """"all", "groups", "none", or a list of group names: those groups' pages
    and their own members' (NeTAMS `client-pages group G1 G2`, not recursive)."""
    if v in ("all", "groups", "none"):
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v):
        return tuple(x.strip() for x in v)
    raise Invalid(f'expected "all", "groups", "none" or a list of group names, got {v!r}')


@dataclasses.dataclass(frozen=True)
class HtmlSettings(Settings):
    """The [html] table (NeTAMS `service html`)."""
    path: str | None = setting(None, check=file_path("a directory"))
    url: str | None = setting(None, check=string("a URL"))   # the pages' address, for notices
    htaccess: bool = setting(False, check=boolean())
    # Basic-auth passwords (htpasswd -B): the console's argon2 hashes are not Apache's
    htpasswd: str | None = setting(None, check=file_path("an htpasswd file"))
    client_pages: str | tuple[str, ...] = setting("all", key="client-pages",
                                                  check=check_client_pages)
    account_pages: str = setting("none", key="account-pages", check=choice("all", "none"))
    display_top: int = setting(10, key="display-top", check=integer(1, 1000, "a number of units"))
    display_health: bool = setting(True, key="display-health", check=boolean())


def page_url(settings: HtmlSettings | None, unit: dict | None = None) -> str | None:
    """Where these pages show a unit, for the notices that link them
    ([html] url, NeTAMS `html url`): its own page when it has one, else the
    index; None without a url."""
    if settings is None or not settings.url:
        return None
    base = settings.url.rstrip("/") + "/"
    if unit is not None and unit.get("type") != "group" and _has_page(settings, unit):
        return f"{base}units/{_file(unit)}/index.html"
    return base


def account_url(settings: HtmlSettings | None, account: dict) -> str | None:
    """An account's page (account-pages all; account: its name and oid),
    for billing's notices; None without one."""
    if settings is None or not settings.url or settings.account_pages != "all":
        return None
    return f"{settings.url.rstrip('/')}/accounts/{_file(account)}/index.html"


def _has_page(settings: HtmlSettings, unit: dict) -> bool:
    """Whether client-pages gives this (non-group) unit a page of its own."""
    pages = settings.client_pages
    if isinstance(pages, tuple):
        return any(p in pages for p in unit.get("parents", ()))
    return pages == "all"


def write(ask, settings: HtmlSettings, path: str | None = None, staff=(),
          now: dt.datetime | None = None) -> dict:
    """Write the pages under path (else settings.path); ask(cmd, **args)
    answers control commands; staff: who may read every page (.htaccess:
    the [[user]] names, each of whom may read everything on the socket).
    Returns what was written."""
    from acctd.web import pages
    root = path or settings.path
    if not root:
        raise BadRequest("html: no directory: give --path DIR or set [html] path")
    env = _templates()
    now = now or dt.datetime.now(dt.timezone.utc)
    written: list[str] = []

    links: dict[str, str] = {}      # unit or group name -> its page, from the top
    accounts: dict[str, str] = {}   # account name -> its page, from the top

    def link(up: str, t, key: str, row: dict) -> str | None:
        v = row.get(key)
        if t.name == "accounts":
            return up + accounts[v] if key == "name" and v in accounts else None
        if t.name == "invoices":    # beside the account's page
            return _invoice_file(row["month"]) if key == "number" else None
        return up + links[v] if key in ("unit", "name") and v in links else None

    def page(rel: str, title: str, tables, up: str, chart=None, view=None, index=()) -> None:
        text = env.get_template("static_page.html").render(
            table_link=lambda t, key, row: link(up, t, key, row),
            title=title, tables=tables, up=up, chart=chart, view=view, generated=now,
            links=links, index=index,
            data=_page_data(tables), css=_static("console.css", "uPlot.min.css"),
            js=_static("uPlot.iife.min.js", "chart.js") if chart else "")
        _put(root, rel, text)
        written.append(rel)

    units = ask("units")
    top = settings.display_top
    status = ask("status") if settings.display_health else {}
    totals = {p: ask("top-units", period=p, limit=1) for p in PERIODS}
    none_now = {k: [] for k in ("gateway", "addrs", "ports", "vlans")}  # no rates in a file

    def overview(period: str, blocked) -> dict:
        built = pages.overview(status, none_now, totals,
                               ask("top-units", period=period, limit=top), blocked, top)
        return {t.name: t for t in built["tables"]}

    month = overview("month", ask("units", sys_policy=True))
    tables = [month["totals"]]
    for p in PERIODS:
        t = month["top_units"] if p == "month" else overview(p, [])["top_units"]
        t.name = f"top_units_{p}"
        tables.append(t)
    tables.append(month["blocked"])
    if settings.display_health:
        tables.append(month["health"])
    listed = settings.client_pages if isinstance(settings.client_pages, tuple) else None
    groups = [u for u in units if u["type"] == "group" and (
        settings.client_pages in ("all", "groups") or (listed and u["name"] in listed))]
    paged = [u for u in units if u["type"] != "group" and _has_page(settings, u)]
    links |= {g["name"]: f"groups/{_file(g)}.html" for g in groups}
    links |= {u["name"]: f"units/{_file(u)}/index.html" for u in paged}
    held = _accounts(ask) if settings.account_pages == "all" else None
    accounts |= {a["name"]: f"accounts/{_file(a)}/index.html" for a in held or ()}
    index = [(n, links[n]) for n in sorted(links)]
    if held is not None:
        index.insert(0, ("billing accounts", "accounts/index.html"))
    page("index.html", "traffic", tables, "", index=index)
    bytes_ = {r["unit"]: r for r in ask("top-units", period="month", limit=max(1, len(units)))
              ["units"]}
    for g in groups:
        rows = [{"unit": u["name"], "type": u["type"],
                 **{k: bytes_.get(u["name"], {}).get(k, 0) for k in ("bytes_in", "bytes_out")}}
                for u in units if g["name"] in u["parents"]]
        page(links[g["name"]], f"group {g['name']}", [_members_table(g["name"], rows)], "../")
    for u in paged:
        series = ask("series", unit=u["name"], view="day")
        previous = ask("series", unit=u["name"], view="day", back=1)
        built = pages.unit(series, previous, ask("quota-show", unit=u["name"]),
                           ask("list", unit=u["name"]), None, None)
        page(links[u["name"]], f"unit {u['name']}", built["tables"], "../../",
             chart=built["chart"], view="day")
    if held is not None:
        from acctd.web import pages
        page("accounts/index.html", "billing accounts",
             pages.account({"accounts": held}, None, None)["tables"], "../")
        for a in held:
            written += _account_page(ask, root, accounts[a["name"]], a["name"], page)
    if settings.htaccess:
        own = [(f"units/{_file(u)}", [u["name"]]) for u in paged]
        own += [(f"accounts/{_file(a)}", [a["name"]]) for a in held or ()]
        if held is not None:
            own.append(("accounts", []))        # the list of accounts: staff only
        written += _htaccess(root, settings, staff, own)
    return {"path": root, "files": len(written), "written": written}


def _accounts(ask) -> list[dict] | None:
    """Billing's accounts, or None when billing is not configured."""
    from acctd.web.pages import billing_configured
    if not billing_configured(ask):
        return None
    return ask("billing-account")["accounts"]


def _account_page(ask, root: str, rel: str, name: str, page) -> list[str]:
    """One account's page (the console's /account?name=...) and its
    invoices' texts beside it; returns the invoices' files."""
    from acctd.web import pages
    reply = ask("billing-account", account=name, full=True)
    plan = reply.get("account", {}).get("plan")
    plans = pages.optional(lambda: ask("billing-plan", plan=plan)) if plan is not None else None
    bills = pages.optional(lambda: ask("billing-invoices", account=name))
    built = pages.account(reply, ask("billing-ledger", account=name), plans, bills)
    page(rel, f"account {name}", built["tables"], "../../")
    out = []
    for bill in (bills or {}).get("invoices", ()):
        doc = ask("billing-invoice", account=name, month=bill["month"])
        file = os.path.join(os.path.dirname(rel), _invoice_file(bill["month"]))
        _put(root, file, doc["text"])
        out.append(file)
    return out


def _invoice_file(month: str) -> str:
    return f"invoice-{month}.txt" if _SAFE.match(month) else "invoice.txt"


def _members_table(group: str, rows: list[dict]):
    from acctd.web.tables import BYTES, TEXT, Table
    return Table("members", f"{group}: this month", [
        ("unit", "unit", TEXT), ("type", "type", TEXT), ("bytes_in", "in", BYTES),
        ("bytes_out", "out", BYTES)], rows, empty="no members")


def _htaccess(root: str, settings: HtmlSettings, staff,
              dirs: list[tuple[str, list[str]]]) -> list[str]:
    """NeTAMS `htaccess yes`: the staff may read every page, a unit or an
    account holder only their own directory (dirs: directory, who besides
    the staff; Basic auth against settings.htpasswd)."""
    users = settings.htpasswd or os.path.join(root, ".htpasswd")
    head = f'AuthType Basic\nAuthName "acctd traffic"\nAuthUserFile {users}\n'
    out = []
    for d, names in [("", []), *dirs]:
        who = " ".join([*names, *staff])
        rel = os.path.join(d, ".htaccess")
        _put(root, rel, head + (f"Require user {who}\n" if who else "Require all denied\n"))
        out.append(rel)
    return out


def _file(unit: dict) -> str:
    """A unit's or an account's file name: its name, or its oid when the
    name is no file name."""
    name = unit["name"]
    return name if _SAFE.match(name) and name not in (".", "..") else f"oid-{unit.get('oid')}"


def _put(root: str, rel: str, text: str) -> None:
    """Write a file whole: a web server never serves half a page."""
    full = os.path.join(root, rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    tmp = full + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, full)
    except OSError as e:
        raise BadRequest(f"html: cannot write {full}: {e.strerror}") from None


def _page_data(tables) -> str:
    """The tables' exact numbers, safe inside a <script> element."""
    from acctd.web.tables import as_json
    return json.dumps(json.loads(as_json(tables))).replace("</", "<\\/")


def _static(*names: str) -> str:
    parts = []
    for n in names:
        with open(os.path.join(STATIC, n)) as f:
            parts.append(f.read())
    # only an end tag would end the inlined element early
    return "\n".join(parts).replace("</script", "<\\/script").replace("</style", "<\\/style")


def _templates():
    import jinja2
    return jinja2.Environment(loader=jinja2.FileSystemLoader(
        os.path.join(os.path.dirname(__file__), "templates")), autoescape=True)
