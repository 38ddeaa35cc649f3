"""InvoicingService: what billing does beyond NeTAMS, in the daemon.

Payments imported from files, postpaid invoices issued when a month ends
and their accounts blocked (sys-deny-money) some days after the due date
unless paid or exempt, statements and invoices per account and month, 95th
percentile figures, and notices (low balance, blocked, payment received)
through the alerter. The tariff, rating and prepaid blocking are
BillingService's (service.py); this one reads the ledger they write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from decimal import Decimal

from acctd.config.schema import Invalid, Table, integer, setting
from acctd.errors import AcctError, BadRequest, NotFound
from acctd.kernel import abi
from acctd.services.billing import accounts, invoices, ledger, notices, payments, percentile
from acctd.services.billing.accounts import Account, AccountError
from acctd.services.billing.invoices import InvoiceError, Terms
from acctd.services.billing.money import Currency, MoneyError, parse
from acctd.services.billing.payments import PaymentError
from acctd.services.contract import Core, Drain, Service

log = logging.getLogger("acctd.daemon")


def _money_or_none(v, ctx) -> Decimal | None:
    try:
        return parse(v if isinstance(v, (str, int)) else str(v))
    except MoneyError as e:
        raise Invalid(str(e)) from None


@dataclasses.dataclass(frozen=True)
class InvoicingSettings(Table):
    """[invoicing]: postpaid terms and notices (fair use is the tariff's:
    a subplan's fair-use-rate)."""
    due_days: int = setting(14, check=integer(0, 366, "days"))          # after the month's end
    block_after_days: int = setting(7, check=integer(0, 366, "days"))   # after the due date
    low_balance: Decimal | None = setting(None, check=_money_or_none)   # notice under this
    # a transit account's month: its billed 95th percentile in Mbit/s times this
    percentile_price: Decimal | None = setting(None, check=_money_or_none)


def currency(billing) -> Currency:
    """[billing] currency and decimals: the tariff's settings, or the table
    as carried data while the tariff has no settings of its own."""
    got = getattr(billing, "money", None)
    if isinstance(got, Currency):
        return got
    return Currency(str(billing.get("currency", "EUR")), int(billing.get("decimals", 2)))


class InvoicingService(Service):
    name = "invoicing"
    EVERY = 60.0    # seconds between looks for a month to invoice and invoices overdue

    def __init__(self, core: Core, settings: InvoicingSettings | None):
        super().__init__(core, settings or InvoicingSettings())
        self.unpaid: dict[int, tuple[str, dt.datetime]] = {}   # oid -> invoice, its due date
        self.accounts: dict[int, Account] = {}
        self.terms: dict[int, Terms] = {}
        self._low: set[int] = set()        # accounts under the low-balance threshold
        self._money: set[int] = set()      # accounts under their credit limit
        self._next = 0.0
        self._bal: dict[int, Decimal] = {}   # balances as of ledger row _seq
        self._seq = 0

    @staticmethod
    def settings_of(config):
        return getattr(config, "invoicing", None)

    def reload(self, settings) -> None:
        self.settings = settings or InvoicingSettings()
        self._next = 0.0

    @property
    def con(self):
        return self.core.storage.con

    @property
    def cur(self) -> Currency:
        return currency(self.core.config.billing)

    @property
    def zone(self):
        """[billing] time-zone, else [processor]'s (as the tariff's zone())."""
        b, default = self.core.config.billing, self.core.config.processor.zone
        if callable(getattr(b, "zone", None)):
            return b.zone(default)
        import zoneinfo
        return zoneinfo.ZoneInfo(b["time-zone"]) if b.get("time-zone") else default

    # -- state ------------------------------------------------------------------

    def start(self) -> None:
        with self.core.lock:
            self._load()
            self._low, self._money = self._under()   # no notices for what was so before
            self._review(self.core.clock(), notify=False)

    def _load(self) -> None:
        self.accounts = {a.oid: a for a in accounts.all_accounts(self.con)}
        self.terms = invoices.all_terms(self.con)

    def tick(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.EVERY
        with self.core.lock:
            self._load()
            if self._review(self.core.clock()):
                self.core.enforce()

    def _review(self, now: dt.datetime, notify: bool = True) -> bool:
        """Issue the last month's invoices of postpaid accounts, then find
        those overdue; True when the blocks changed."""
        month, post = self._postpaid_last_month(now)
        self._charge_percentiles(month, now)
        central = self._central()
        if post and central is not None:
            # issued once across the gateways: the central service claims
            # them on the server and every gateway keeps the server's
            if self._lacking(month, post):
                central.invoices_wanted()
        elif post:
            issued = invoices.issue(self.con, month, self.zone, self.cur, now,
                                    self.settings.due_days, post)
            if issued:
                log.info("billing: %d invoices issued for %s", len(issued), f"{month:%Y-%m}")
        before = self.blocks()
        found = invoices.unpaid(self.con, now, self.settings.block_after_days,
                                self._payments_elsewhere())
        unpaid = {o: v for o, v in found.items() if o in self.accounts
                  and self.terms.get(o, Terms()).postpaid and not self.terms[o].exempt}
        for oid in set(unpaid) - set(self.unpaid):
            number, due = unpaid[oid]
            log.info("billing: account %s blocked: invoice %s unpaid since %s",
                     self.accounts[oid].name, number, f"{due:%Y-%m-%d}")
            if notify:
                self._notify(oid, "blocked", why=notices.why(
                    self._language, "invoice", number=number, due=f"{due:%Y-%m-%d}"))
        self.unpaid = unpaid
        return self.blocks() != before

    # -- with [central] (acctd/services/central/invoicing.py) ---------------------------

    def _central(self):
        c = self.core.services.get("central")
        return c if c is not None and c.settings is not None else None

    def _payments_elsewhere(self) -> list:
        """The other gateways' payments as last read, (account, ts, amount)."""
        c = self._central()
        return c.payments_elsewhere if c is not None else []

    def _lacking(self, month: dt.date, oids: list[int]) -> list[int]:
        have = {int(a) for (a,) in self.con.execute(
            "SELECT account_oid FROM invoice WHERE month = ?", [month]).fetchall()}
        return [o for o in oids if o not in have]

    def _postpaid_last_month(self, now: dt.datetime) -> tuple[dt.date, list[int]]:
        """Last month, and the postpaid accounts it invoices (none made after it)."""
        month = (now.astimezone(self.zone).date().replace(day=1) - dt.timedelta(days=1)
                 ).replace(day=1)
        end = invoices.bounds(month, self.zone)[1]
        return month, sorted(o for o, t in self.terms.items() if t.postpaid
                             and o in self.accounts and self.accounts[o].created < end)

    def to_issue(self, now: dt.datetime) -> tuple[dt.date, list[int]]:
        """Last month and the postpaid accounts without its invoice here."""
        month, post = self._postpaid_last_month(now)
        return month, self._lacking(month, post)

    @contextlib.contextmanager
    def _with_elsewhere(self, elsewhere: list[tuple]):
        """This gateway's ledger and the other gateways' rows (`elsewhere`,
        the ledger's columns) as one table expression, for the queries here."""
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE ledger_elsewhere AS "
                    "SELECT * FROM ledger LIMIT 0")
        if elsewhere:
            con.executemany("INSERT INTO ledger_elsewhere VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                            "?, ?, ?, ?)", elsewhere)
        try:
            yield "(SELECT * FROM ledger UNION ALL SELECT * FROM ledger_elsewhere) AS ledger"
        finally:
            con.execute("DROP TABLE ledger_elsewhere")

    def _rows_elsewhere(self, oid: int, month: dt.date) -> list[tuple]:
        """The other gateways' rows of an account up to the month's end (none
        while the server is away: then this gateway's alone). No lock held."""
        c = self._central()
        if c is None:
            return []
        try:
            return c.rows_for_months(oid, invoices.bounds(month, self.zone)[1])
        except AcctError as e:
            log.info("billing: %s", e)
            return []

    def compose_with(self, month: dt.date, oids: list[int], now: dt.datetime,
                     elsewhere: list[tuple]) -> list[dict]:
        """These accounts' invoices of the month over this gateway's ledger
        and the other gateways' rows (`elsewhere`, the ledger's columns)."""
        with self._with_elsewhere(elsewhere) as rows:
            docs = invoices.compose(self.con, month, self.zone, self.cur, now,
                                    self.settings.due_days, oids, rows)
        end = invoices.bounds(month, self.zone)[1]
        due = invoices.due_date(end, self.zone, self.settings.due_days)
        return [docs.get(o) or invoices.empty(o, month, now, due, self.cur) for o in oids]

    def shared_changed(self) -> None:
        """Terms or invoices taken from elsewhere (central); the caller holds the lock."""
        self._load()
        from acctd.services.billing.service import BillingService
        moved = self.core.service(BillingService).terms_changed()
        if self._review(self.core.clock()) or moved:
            self.core.enforce()

    def _charge_percentiles(self, month: dt.date, now: dt.datetime) -> None:
        """A `percentile` row for each transit account's month, once: its
        billed 95th percentile (bit/s) / 10^6 times percentile-price."""
        price = self.settings.percentile_price
        transit = [o for o, t in self.terms.items() if t.transit and o in self.accounts]
        if price is None or not transit:
            return
        start, end = invoices.bounds(month, self.zone)
        done = {int(a) for (a,) in self.con.execute(
            "SELECT account_oid FROM ledger WHERE kind = 'percentile' AND period_start = ?",
            [ledger.naive(start)]).fetchall()}
        rows = []
        for oid in transit:
            a = self.accounts[oid]
            if oid in done or a.created >= end:
                continue
            p = percentile.of_units(self.con, [int(u, 16) for u in a.units], start, end)
            amount = self.cur.quantize(p.billed_bps * price / 1_000_000)
            rows.append(ledger.Entry(
                oid, "percentile", -amount, now, period_start=start, period_end=end,
                bytes_in=p.bytes_in, bytes_out=p.bytes_out,
                cause=f"95th percentile {percentile.shown(p.billed_bps)} bit/s at "
                      f"{price}/Mbit/s"))
        ledger.append(self.con, rows)

    def blocks(self) -> dict[str, int]:
        return {u: abi.SysPolicy.MONEY for oid in self.unpaid
                for u in self.accounts[oid].units}

    def status(self) -> dict | None:
        if not self.unpaid:
            return None
        return {"unpaid_invoices": {self.accounts[o].name: f"invoice {n} unpaid since "
                                                           f"{d:%Y-%m-%d}: sys-deny-money"
                                    for o, (n, d) in sorted(self.unpaid.items())}}

    # -- notices ----------------------------------------------------------------

    def _under(self) -> tuple[set[int], set[int]]:
        """Prepaid accounts under the low-balance threshold, and under their
        credit limit (a postpaid balance is owed until its invoice is due)."""
        bal = self._balances()
        low = self.settings.low_balance
        pre = [o for o in self.accounts if not self.terms.get(o, Terms()).postpaid]
        return ({o for o in pre if low is not None and bal.get(o, Decimal(0)) < low},
                {o for o in pre if bal.get(o, Decimal(0)) < self.accounts[o].credit_limit})

    def _balances(self) -> dict[int, Decimal]:
        """Every balance, from the rows appended since the last look (the
        ledger is append-only: a drain reads only its own rows)."""
        for oid, amount, last in self.con.execute(
                "SELECT account_oid, sum(amount), max(seq) FROM ledger WHERE seq > ? "
                "GROUP BY account_oid", [self._seq]).fetchall():
            self._bal[int(oid)] = self._bal.get(int(oid), Decimal(0)) + Decimal(amount)
            self._seq = max(self._seq, int(last))
        return self._bal

    def after_drain(self, drain: Drain) -> None:
        """The drain's charges are committed: notices for the balances they
        moved under the threshold or the credit limit."""
        if not self.accounts:
            return
        low, money = self._under()
        for oid in sorted(money - self._money):
            self._notify(oid, "blocked", why=notices.why(self._language, "money"))
        for oid in sorted(low - self._low - (money - self._money)):
            self._notify(oid, "low_balance", threshold=self.cur.format(self.settings.low_balance),
                         limit=self.cur.format(self.accounts[oid].credit_limit))
        self._low, self._money = low, money

    @property
    def _mailer(self):
        from acctd.services.alerter import AlerterService
        try:
            return self.core.service(AlerterService).mailer
        except KeyError:
            return None

    @property
    def _language(self) -> str:
        m = self._mailer
        return m.settings.language if m is not None else "en"

    def _notify(self, oid: int, kind: str, **fields) -> None:
        mailer = self._mailer
        if mailer is None:
            return
        from acctd.services.alerter import recipients
        a = self.accounts[oid]
        to = recipients(a.email or None, mailer.settings.admins)
        if not to:
            return
        from acctd.web.static_site import account_url
        bal = self.cur.format(ledger.balance(self.con, oid), code=True)
        page = account_url(self.core.config.html, {"name": a.name, "oid": a.oid_text})
        subject, body = notices.render(kind, mailer.settings.language, self._links(a), page,
                                       account=a.name, balance=bal, **fields)
        mailer.enqueue(to, subject, body)

    def _links(self, a: Account) -> list[tuple[str | None, str]]:
        """The account's units' traffic pages ([html] url), else the reports' index."""
        from acctd.web.static_site import page_url
        settings, snap = self.core.config.html, self.core.snapshot
        pages = []
        for oid in a.units:
            i = snap.units.by_oid.get(oid)
            if i is not None:
                u = snap.units.units[i]
                url = page_url(settings, {"name": u.name, "oid": u.oid, "type": u.type,
                                          "parents": u.parents})
                if url is not None and url != page_url(settings):
                    pages.append((u.name, url))
        index = page_url(settings)
        return pages or ([(None, index)] if index else [])

    # -- commands ---------------------------------------------------------------

    def _account(self, name: str) -> Account:
        try:
            return accounts.find(self.con, name)
        except AccountError as e:
            raise NotFound(str(e)) from None

    def import_payments(self, rows: list[dict], source: str = "payments",
                        check: bool = False) -> dict:
        """`acctctl billing payments import FILE`: rows parsed by acctctl
        (payments.parse), checked here against the accounts and the ledger;
        all are written, or none."""
        cur = self.cur
        paid = []
        for d in rows:
            try:
                paid.append(payments.Payment.from_dict(d, cur))
            except (KeyError, TypeError, ValueError) as e:
                raise BadRequest(f"{source}:{d.get('line', '?')}: {e}") from None
        with self.core.lock:
            now = self.core.clock()
            try:
                if check:
                    fresh, dup = payments.check(self.con, paid, cur, source)
                    return {"added": 0, "new": len(fresh), "duplicates": dup}
                done = payments.import_payments(self.con, paid, cur, self.zone, now, source)
            except PaymentError as e:
                raise BadRequest(str(e)) from None
            self._load()
            for oid, p in done.added:
                self._notify(oid, "payment", amount=cur.format(p.amount, code=True),
                             reference=p.reference)
            self._low, self._money = self._under()
            if self._review(now):
                self.core.enforce()
            total = sum((p.amount for _, p in done.added), Decimal(0))
            return {"added": len(done.added), "duplicates": done.duplicates,
                    "amount": cur.format(total)}

    def set_terms(self, account: str, words: list[str]) -> dict:
        """`acctctl billing terms ACCOUNT postpaid|prepaid [exempt|not-exempt]
        [transit|not-transit]`."""
        with self.core.lock:
            a = self._account(account)
            t = self.terms.get(a.oid, Terms())
            for w in words:
                if w in ("postpaid", "prepaid"):
                    t = dataclasses.replace(t, postpaid=w == "postpaid")
                elif w in ("exempt", "not-exempt", "transit", "not-transit"):
                    t = dataclasses.replace(t, **{w.removeprefix("not-"): not
                                                  w.startswith("not-")})
                else:
                    raise BadRequest(f"terms: expected postpaid, prepaid, exempt, not-exempt, "
                                     f"transit or not-transit, got {w!r}")
            invoices.set_terms(self.con, a.oid, t, self.core.clock())
            if self._central() is not None:
                self._central().changed_here()
            self._load()
            from acctd.services.billing.service import BillingService
            moved = self.core.service(BillingService).terms_changed()
            if self._review(self.core.clock()) or moved:
                self.core.enforce()
            return {"account": a.name, **dataclasses.asdict(t)}

    def _month(self, month: str | None) -> dt.date:
        return month_asked(month, self.core.clock(), self.zone)

    def invoice(self, account: str, month: str | None = None) -> dict:
        """The month's invoice: as issued, else a draft of it as of now (with
        [central] over every gateway's rows)."""
        with self.core.lock:
            a, m = self._account(account), self._month(month)
        elsewhere = self._rows_elsewhere(a.oid, m)
        with self.core.lock, self._with_elsewhere(elsewhere) as rows:
            return answer_invoice(self.con, a, month, self.zone, self.cur, self.core.clock(),
                                  self.settings.due_days, self._payments_elsewhere(), rows)

    def invoices(self, account: str) -> dict:
        """The account's issued invoices (`billing-invoice` shows each)."""
        with self.core.lock:
            a, cur = self._account(account), self.cur
            rows = [{**r, "amount_due": str(cur.quantize(Decimal(r["amount_due"])))}
                    for r in invoices.issued(self.con, a.oid, self._payments_elsewhere())]
            text = "".join(f"{r['number']}  {r['month']}  due {r['due'][:10]}  "
                           f"{r['amount_due']:>12} {cur.code}  "
                           f"{'paid' if r['paid'] else 'UNPAID'}\n" for r in rows)
            return {"account": a.name, "invoices": rows, "text": text}

    def statement(self, account: str, month: str | None = None) -> dict:
        """The month's statement (with [central] of every gateway's rows)."""
        with self.core.lock:
            a, m = self._account(account), self._month(month)
        elsewhere = self._rows_elsewhere(a.oid, m)
        with self.core.lock, self._with_elsewhere(elsewhere) as rows:
            cur = self.cur
            s = invoices.statement(self.con, a.oid, m, self.zone, cur, rows)
            return {**s, "account": a.name,
                    "text": invoices.format_statement(s, a.name, cur)}

    def percentile(self, account: str, month: str | None = None) -> dict:
        """The 95th percentile of the account's units in the month."""
        with self.core.lock:
            a, m = self._account(account), self._month(month)
            start, end = invoices.bounds(m, self.zone)
            p = percentile.of_units(self.con, [int(u, 16) for u in a.units], start, end)
            d = p.to_dict()
            text = (f"{a.name} {m:%Y-%m}: 95th percentile in {d['in_bps']} bit/s, out "
                    f"{d['out_bps']} bit/s, billed {d['billed_bps']} bit/s "
                    f"({p.samples} samples of 5 minutes)\n")
            return {**d, "account": a.name, "month": f"{m:%Y-%m}", "text": text}



def month_asked(month: str | None, now: dt.datetime, zone) -> dt.date:
    """A command's MONTH (2026-11), or now's."""
    try:
        if month is None:
            return now.astimezone(zone).date().replace(day=1)
        return invoices.month_of(month)
    except InvoiceError as e:
        raise BadRequest(str(e)) from None


def answer_invoice(con, a: Account, month: str | None, zone, cur: Currency, now: dt.datetime,
                   due_days: int, elsewhere=(), ledger_rows: str = "ledger") -> dict:
    """`billing invoice ACCOUNT [MONTH]` over a database's ledger and invoices:
    as issued, else a draft of it as of now over ledger_rows; elsewhere:
    other gateways' payments (invoices.paid_since)."""
    m = month_asked(month, now, zone)
    doc = invoices.stored(con, a.oid, m)
    draft = doc is None
    if draft:
        doc = invoices.compose(con, m, zone, cur, now, due_days, [a.oid], ledger_rows).get(a.oid)
        if doc is None:
            end = invoices.bounds(m, zone)[1]
            doc = invoices.empty(a.oid, m, now, invoices.due_date(end, zone, due_days), cur)
        paid = None
    else:
        got = invoices.paid_since(con, a.oid, invoices.bounds(m, zone)[1], elsewhere)
        paid = got >= Decimal(doc["amount_due"])
    text = invoices.format_invoice(doc, a.name, cur, zone, paid)
    if draft:
        text = "DRAFT (not issued)\n" + text
    return {**doc, "account": a.name, "draft": draft, "paid": paid, "text": text}
