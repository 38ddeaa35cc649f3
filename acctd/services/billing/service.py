"""BillingService: NeTAMS `service billing` in the daemon.

Rating runs in in_drain, so the drain's charges and its rating state commit
in the drain's own transaction, with its counts, or not at all: a kill -9
before the COMMIT leaves both as they were and the re-run drain charges the
same. What the commit changed (balances, state) reaches memory in
after_drain, and an account whose balance fell below its credit limit has
its units blocked (reason money) there, at the drain that crossed it. A
payment or `balance add` that lifts it unblocks at once (enforce()).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from decimal import Decimal

import numpy as np

from acctd.errors import AcctError, BadRequest, Conflict, NotFound, PermissionDenied
from acctd.kernel import abi
from acctd.services.billing import accounts, invoices, ledger, rating
from acctd.services.billing.accounts import Account, AccountError
from acctd.services.billing.ledger import Entry
from acctd.services.billing.money import MoneyError
from acctd.services.billing.tariff import BillingSettings
from acctd.services.contract import Core, Drain, Service

log = logging.getLogger("acctd.daemon")

# why an account's units are blocked, as its status says
MONEY, ADMIN, SELF = "money", "block", "beblock"
OUTAGE = "outage"   # [central] unreachable and outage-credit spent here (sys-deny-money)


def _bad(e: Exception) -> BadRequest:
    return BadRequest(str(e))


def block_reason(a: Account, balance: Decimal, postpaid: bool = False) -> str | None:
    """Why the account's units are blocked, or None: the operator's block,
    the subscriber's own, or money (a prepaid balance below the credit
    limit; a postpaid balance is owed until its invoice is due, and the
    invoicing service blocks an unpaid one)."""
    if a.status == "block":
        return ADMIN
    if a.status == "beblock":
        return SELF
    if not postpaid and balance < a.credit_limit:
        return MONEY
    return None


def month_after(t: dt.datetime, zone) -> dt.datetime:
    return rating.month(t, zone)[1]


class BillingService(Service):
    name = "billing"

    def __init__(self, core: Core, settings: BillingSettings):
        super().__init__(core, settings)
        self.accounts: dict[int, Account] = {}
        self.balances: dict[int, Decimal] = {}
        self.book: rating.Book | None = None   # this month's rating state, as committed
        self._slots = None                       # per slot of the book: plan, created
        self._pairs = None                       # every account's (account, subplan)
        self.reasons: dict[int, str] = {}       # account oid -> why it is blocked
        self.throttled: dict[int, tuple] = {}   # account oid -> its fair-use rate
        self._pending: tuple | None = None      # what in_drain wrote, until it commits
        self._fees: dict = {}
        self.outage_spent: dict[int, Decimal] = {}   # charged here while central is away

    @staticmethod
    def settings_of(config):
        return config.billing

    @property
    def con(self):
        return self.core.storage.con

    @property
    def zone(self):
        return self.settings.zone(self.core.snapshot.config.processor.zone)

    # -- state ------------------------------------------------------------------

    def start(self) -> None:
        self._load()
        self.reasons = self._reasons()
        self.throttled = self._throttled(self.core.clock())

    def _load(self) -> None:
        con = self.con
        self.accounts = {a.oid: a for a in accounts.all_accounts(con)}
        self.balances = ledger.balances(con)
        start = rating.month(self.core.clock(), self.zone)[0]
        self.book = load_book(con, start)
        self._slots = self._pairs = None

    def _central(self):
        """The central service when [central] is on (its ledger rows elsewhere)."""
        c = self.core.services.get("central")
        return c if c is not None and c.settings is not None else None

    def elsewhere(self, oid: int) -> Decimal:
        """The other gateways' shipped rows of the account when [central] is
        on (their last known sum during an outage)."""
        c = self._central()
        return c.ledger_elsewhere.get(oid, Decimal(0)) if c else Decimal(0)

    def balance(self, oid: int) -> Decimal:
        """What decisions use: this gateway's ledger plus elsewhere()."""
        return self.balances.get(oid, Decimal(0)) + self.elsewhere(oid)

    def _central_away(self) -> bool:
        c = self._central()
        return c is not None and c.state != "connected"

    def balances_changed(self) -> None:
        """The other gateways' rows moved, or the link to them returned (the
        caller holds the lock)."""
        if not self._central_away():
            self.outage_spent = {}
        if self.terms_changed():
            for oid, why in sorted(self.reasons.items()):
                log.info("billing: account %s %s, balance %s on all gateways",
                         self.accounts[oid].name, why, self.balance(oid))
            self.core.enforce()

    def _ship_ledger(self, now: dt.datetime) -> None:
        """A command's ledger rows into the outbox, in its transaction."""
        c = self._central()
        if c is not None:
            from acctd.services.central import balances
            balances.enqueue_rows(c, self.core.storage, now)

    def _reasons(self) -> dict[int, str]:
        out = {}
        postpaid = {oid for oid, t in invoices.all_terms(self.con).items() if t.postpaid}
        for oid, a in self.accounts.items():
            why = block_reason(a, self.balance(oid), oid in postpaid)
            if why is None and self.outage_spent.get(oid, 0) > self.settings.outage_credit:
                why = OUTAGE   # the outage rule: no unlimited spending while unseen
            if why:
                out[oid] = why
        return out

    def terms_changed(self) -> bool:
        """An account went postpaid or prepaid: whether its blocks moved."""
        before, self.reasons = self.reasons, self._reasons()
        return self.reasons != before

    def blocks(self) -> dict[str, int]:
        return {u: abi.SysPolicy.MONEY for oid in self.reasons
                for u in self.accounts[oid].units}

    def rate_limits(self) -> dict[str, tuple]:
        return {u: rate for oid, rate in self.throttled.items()
                for u in self.accounts[oid].units}

    def _throttled(self, now: dt.datetime) -> dict[int, tuple]:
        if self.book is None or not any(sp.fair_use_rate for sp in self.settings.subplan.values()):
            return {}
        if self.book.month != rating.month(now, self.zone)[0]:
            return {}                        # a new month: nobody is past fair use yet
        plan, created, _keys, _feeds = self._slot_info(self.book, self.accounts)
        return rating.fair_use(self.settings.subplan, self.book, plan, created, now, self.zone)

    def reload(self, settings) -> None:
        self.settings = settings
        self._fees = {}
        self._slots = self._pairs = None

    def accounts_changed(self) -> None:
        """Accounts written from elsewhere (central): as after a command."""
        self._changed()

    def _changed(self) -> None:
        """After a command changed accounts or the ledger (the caller holds the
        lock): memory from the database, and the kernel if blocks moved."""
        before = self.blocks()
        self._load()
        self.reasons = self._reasons()
        if self.blocks() != before:
            self.core.enforce()

    # -- rating -------------------------------------------------------------------

    def _slot_info(self, book: rating.Book, accts: dict[int, Account]):
        """Per slot: the account's plan (-1: the slot's subplan is not in it),
        when it was made, and the rows (unit << 32 | policy) that feed it."""
        ids = book.slots[["account", "subplan"]]
        if self._slots is not None and accts is self.accounts and \
                np.array_equal(self._slots[0], ids):
            return self._slots[1:]
        plans = self.settings.plan
        sl = book.slots
        plan = np.full(len(sl), -1, np.int64)
        created = np.zeros(len(sl), np.int64)
        policies = self.core.snapshot.policies
        pol = {}
        for n, sp in self.settings.subplan.items():
            try:
                pol[n] = int(policies.policies[policies.find(sp.policy)].oid, 16)
            except KeyError:
                log.error("billing: subplan %d rates policy %r, which is not configured", n,
                          sp.policy)
        feeds_key, feeds_slot = [], []
        for i, (oid, n) in enumerate(zip(sl["account"].tolist(), sl["subplan"].tolist())):
            a = accts.get(oid)
            if a is None:
                continue
            created[i] = rating.to_us(a.created)
            if a.plan in plans and n in plans[a.plan].subplans:
                plan[i] = a.plan
                if n in pol:
                    for u in a.units:
                        feeds_key.append(int(u, 16) << 32 | pol[n])
                        feeds_slot.append(i)
        order = np.argsort(np.array(feeds_key, np.int64), kind="stable")
        keys = np.array(feeds_key, np.int64)[order]
        slots = np.array(feeds_slot, np.int64)[order]
        self._slots = (ids.copy(), plan, created, keys, slots)
        return self._slots[1:]

    def _book_for(self, now: dt.datetime, con, accts: dict[int, Account]) -> rating.Book:
        """The book of now's month, with a slot for every account's subplans."""
        start = rating.month(now, self.zone)[0]
        book = self.book if self.book is not None and self.book.month == start else \
            load_book(con, start)
        if self._pairs is None or accts is not self.accounts:
            pairs = [(a.oid, n) for a in accts.values()
                     for n in (self.settings.plan[a.plan].subplans
                               if a.plan in self.settings.plan else ())]
            made = (np.array([p[0] for p in pairs], np.uint32),
                    np.array([p[1] for p in pairs], np.int32))
            if accts is not self.accounts:
                return book.with_slots(*made)
            self._pairs = made
        return book.with_slots(*self._pairs)

    def in_drain(self, drain: Drain, tx) -> None:
        self._pending = None
        if not self.settings.plan or not self.accounts:
            return
        con, now = tx.con, drain.now
        switched = {}
        for oid, plan in rating.next_plans(self.accounts.values(), now).items():
            switched[oid] = accounts.update(con, oid, now, plan=plan, nextplan=None,
                                            nextplan_from=None)
        # the switch reaches memory with the commit (after_drain), not before
        accts = {**self.accounts, **switched} if switched else self.accounts
        book = self._book_for(now, con, accts)
        plan, created, keys, feeds = self._slot_info(book, accts)
        used = np.zeros((len(book.slots), 2), np.int64)
        rows = drain.rows
        if len(keys) and len(rows["unit_oid"]):
            k = rows["unit_oid"].astype(np.int64) << 32 | rows["policy_oid"].astype(np.int64)
            lo, hi = np.searchsorted(keys, k, "left"), np.searchsorted(keys, k, "right")
            hit = np.flatnonzero(hi > lo)
            if len(hit):
                # a row may feed several slots (one policy in two subplans of a plan)
                n = (hi - lo)[hit]
                at = np.repeat(lo[hit], n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
                src = np.repeat(hit, n)
                np.add.at(used, (feeds[at], rows["dir"][src].astype(np.int64)),
                          rows["bytes"][src].astype(np.int64))
        if len(self._fees) > 100_000:
            self._fees = {}
        cols, after = rating.rate_book(self.settings.subplan, book, plan, created,
                                       used[:, abi.Dir.IN], used[:, abi.Dir.OUT], now, self.zone,
                                       self.settings.money, self._fees)
        ledger.append_columns(con, now, cols, "drain")
        save_book(con, after)
        self._pending = (after, cols, switched)

    def after_drain(self, drain: Drain) -> None:
        if self._pending is None:
            return
        self.book, cols, switched = self._pending
        self._pending = None
        if switched:
            self.accounts.update(switched)
            self._slots = self._pairs = None
        away = self._central_away()
        for a, v in zip(cols["account"].tolist(), cols["amount"].tolist()):
            self.balances[a] = self.balances.get(a, Decimal(0)) + rating.from_nanos(v)
            if away and v < 0:
                self.outage_spent[a] = self.outage_spent.get(a, Decimal(0)) - \
                    rating.from_nanos(v)
        reasons, throttled = self._reasons(), self._throttled(drain.now)
        if reasons != self.reasons or throttled != self.throttled:
            for oid in set(reasons) - set(self.reasons):
                log.info("billing: account %s blocked (%s), balance %s",
                         self.accounts[oid].name, reasons[oid], self.balances.get(oid))
            for oid in set(throttled) - set(self.throttled):
                log.info("billing: account %s past fair use, limited to %s",
                         self.accounts[oid].name, throttled[oid])
            self.reasons, self.throttled = reasons, throttled
            self.core.enforce()

    def status(self) -> dict | None:
        if not self.accounts:
            return None
        blocked = [f"{self.accounts[o].name}({why})" for o, why in sorted(self.reasons.items())]
        return {"billing": {"accounts": len(self.accounts), "blocked": blocked,
                            "fair_use": [self.accounts[o].name for o in sorted(self.throttled)]}}

    # -- commands ---------------------------------------------------------------

    def _account(self, name: str) -> Account:
        try:
            return accounts.find(self.con, name)
        except AccountError as e:
            raise NotFound(str(e)) from None

    def account_create(self, name: str, words: list[str] = ()) -> dict:
        """`acctctl billing account create NAME [plan N] [credit-limit ZZ] ...`"""
        oid, c = None, self._central()
        if c is not None:   # the oid from the server (asked without the lock held)
            with self.core.lock:
                local = self.con.execute("SELECT coalesce(max(oid), 0) FROM account"
                                         ).fetchall()[0][0]
            oid = c.new_account_oid(name, int(local))
        with self.core.lock:
            now = self.core.clock()
            try:
                a = accounts.create(self.con, name, now, oid=oid,
                                    credit_limit=self.settings.default_credit_limit)
            except AccountError as e:
                raise _bad(e) from None
            self._changed()
        if words:
            return self.account_set(a.name, list(words))
        return self.account_show(a.name)

    def account_set(self, account: str, words: list[str]) -> dict:
        """NeTAMS `account NNN ...` words, applied in one transaction."""
        with self.core.lock:
            a = self._account(account)
            con, now = self.con, self.core.clock()
            con.execute("BEGIN")
            try:
                for step in parse_account_words(words):
                    self._apply(a.oid, step, now)
                self._ship_ledger(now)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._changed()
            return self.account_show(self._account(str(a.oid)).name)

    def _apply(self, oid: int, step: tuple, now: dt.datetime) -> None:
        con, cur = self.con, self.settings.money
        what = step[0]
        try:
            if what in ("name", "description", "email"):
                accounts.update(con, oid, now, **{what: step[1]})
            elif what == "password":
                from acctd.services.login import LoginService
                accounts.update(con, oid, now,
                                password=self.core.service(LoginService).table.hasher.hash(step[1]))
            elif what in ("plan", "nextplan"):
                n = _number(step[1], what)
                if n not in self.settings.plan:
                    raise BadRequest(f"{what} {n}: no such plan (see acctctl billing plan)")
                if what == "plan":
                    accounts.update(con, oid, now, plan=n)
                else:
                    accounts.update(con, oid, now, nextplan=n,
                                    nextplan_from=month_after(now, self.zone))
            elif what in ("block", "beblock", "unblock"):
                status = "active" if what == "unblock" else what
                accounts.update(con, oid, now, status=status,
                                blocked=None if status == "active" else now)
            elif what == "credit-limit":
                accounts.update(con, oid, now, credit_limit=cur.parse(step[1]))
            elif what == "balance":
                amount = cur.parse(step[2])
                have = ledger.balance(con, oid) + self.elsewhere(oid)   # all gateways'
                delta = {"add": amount, "remove": -amount, "set": amount - have}[step[1]]
                if delta:
                    ledger.append(con, [Entry(oid, "adjustment", delta, now,
                                              cause=f"balance {step[1]} {step[2]}")])
            elif what == "unit":
                _by, key, verb = step[1], step[2], step[3]
                u = self.core.snapshot.unit(key)
                if _by == "oid" and u.oid != key.upper().zfill(6):
                    raise NotFound(f"no unit with oid {key!r}")
                (accounts.add_unit if verb == "add" else accounts.delete_unit)(con, oid, u.oid)
        except (AccountError, MoneyError) as e:
            raise _bad(e) from None
        except KeyError as e:
            raise NotFound(str(e).strip("'\"")) from None

    def self_block(self, account: str, undo: bool = False) -> dict:
        """The holder's own block (NeTAMS `beblock`, from the subscriber's
        page): it never overrides the operator's `block`, and undoing it
        lifts only a beblock. (The operator's `account set NAME unblock`
        lifts either, as NeTAMS's `unblock` does.)"""
        with self.core.lock:
            a = self._account(account)
            if a.status == ADMIN:
                raise Conflict(f"account {a.name} is blocked by the operator: only they can "
                               "unblock it")
            if undo and a.status != SELF:
                raise Conflict(f"account {a.name} is not blocked by its holder")
            if a.status == ("active" if undo else SELF):
                return self.account_show(a.name)
            return self.account_set(a.name, ["unblock" if undo else "beblock"])

    # -- an account's holder (acctd/control/delegation.py) -----------------------------

    def verify(self, account: str, password: str) -> str:
        """A holder's login to the web console: the account's name if the
        password is its `password` (argon2id, as `account set NAME
        password` stored it)."""
        from argon2.exceptions import InvalidHashError, VerificationError

        from acctd.services.login import LoginService
        with self.core.lock:
            try:
                a = accounts.find(self.con, account)
            except AccountError:
                a = None
            hasher = self.core.service(LoginService).table.hasher
            try:
                if a is None or not a.password:
                    hasher.hash(password)  # the cost of a check: no probing names by timing
                    raise VerificationError
                hasher.verify(a.password, password)
            except (VerificationError, InvalidHashError):
                raise PermissionDenied("wrong account name or password") from None
            return a.name

    def holding(self, account: str) -> dict:
        """What the holder of `account` may see: its oid, plan and units
        (oid -> name)."""
        with self.core.lock:
            a = self._account(account)
            snap = self.core.snapshot
            return {"oid": a.oid_text, "plan": a.plan,
                    "units": {u: snap.name_of(u) for u in a.units if u in snap.units.by_oid}}

    def account_show(self, account: str | None = None, full: bool = False) -> dict:
        """`show account NAME [full] | list`."""
        with self.core.lock:
            cur = self.settings.money
            if account is None:
                rows = sorted(self.accounts.values(), key=lambda a: a.name)
                return {"text": account_list_text([(a, self.balance(a.oid),
                                                    self.reasons.get(a.oid)) for a in rows], cur),
                        "accounts": [self._account_dict(a) for a in rows]}
            a = self._account(account)
            return {"text": format_account(a, ledger.balance(self.con, a.oid) + self.elsewhere(a.oid), cur,
                                           self.settings, self.core.snapshot, full,
                                           self.reasons.get(a.oid), self.zone),
                    "account": self._account_dict(a)}

    def _account_dict(self, a: Account) -> dict:
        d = account_dict(a, ledger.balance(self.con, a.oid) + self.elsewhere(a.oid),
                         self.settings.money, self.reasons.get(a.oid), self.throttled.get(a.oid))
        d["unit_names"] = [self.core.snapshot.name_of(u) for u in a.units]
        return d

    def plan_show(self, plan: int | None = None, what: str | None = None) -> dict:
        """`show plan [N [account|list]]`."""
        with self.core.lock:
            plans = self.settings.plan
            if plan is not None and plan not in plans:
                raise NotFound(f"no plan {plan} (see acctctl billing plan)")
            if what is not None:
                if plan is None or what not in ("account", "list"):
                    raise BadRequest("expected plan N account or plan N list")
                names = sorted(a.name for a in self.accounts.values() if a.plan == plan)
                return {"text": "".join(f"{n}\n" for n in names), "accounts": names}
            chosen = [plan] if plan is not None else list(plans)
            return {"text": format_plans(self.settings, chosen, self.core.snapshot),
                    "plans": [{"number": n, "name": plans[n].name,
                               "description": plans[n].description,
                               "subplans": list(plans[n].subplans)} for n in chosen]}

    def ledger_rows(self, account: str, since: str | None = None,
                    until: str | None = None) -> dict:
        """The account's ledger rows; with [central] every gateway's, each
        named by its gateway (the others' as the server has them; while it
        is unreachable, this gateway's alone, and the reply says so)."""
        t0, t1 = _when(since, self.zone), _when(until, self.zone)
        c = self._central()
        with self.core.lock:
            a = self._account(account)
        others, away = [], None
        if c is not None:      # asked without the lock held
            try:
                others = c.ledger_elsewhere_rows(a.oid, t0, t1)
            except AcctError as e:
                away = str(e)
        with self.core.lock:
            mine = ledger.rows(self.con, a.oid, t0, t1)
            here = c.settings.gateway if c is not None else None
            rows = [(here, r) for r in mine]
            if others:   # every gateway's, by time
                rows = sorted(rows + others, key=lambda r: (r[1].ts, r[0], r[1].seq))
            out = ledger_answer(a.name, rows,
                                ledger.balance(self.con, a.oid) + self.elsewhere(a.oid),
                                self.settings.money)
            if away:
                out["unavailable"] = away
            return out


    def rerate(self, start: str, end: str | None = None, dry_run: bool = False) -> dict:
        """Rate [start's month, end) again from the hour rollups with today's
        tariff and accounts, and compare with the ledger. Without dry_run the
        differences become adjustment rows and the current month's rating
        state is the re-rated one, so later drains go on from it."""
        with self.core.lock:
            zone, cur, con = self.zone, self.settings.money, self.con
            t0 = rating.month(_when(start, zone), zone)[0]
            last = self.core.storage.last_drain or self.core.clock()
            t1 = min(_when(end, zone), last) if end else last
            if t1 <= t0:
                raise BadRequest(f"nothing to rerate between {t0:%Y-%m-%d} and {t1:%Y-%m-%d}")
            rated = [rating.Rated(a.oid, a.plan, a.created) for a in self.accounts.values()]
            plans = {n: p.subplans for n, p in self.settings.plan.items()}
            again, book = rating.replay(self.settings.subplan, plans, rated,
                                         self._hourly(t0, t1), t0, t1, zone, cur)
            booked: dict[tuple[int, int, str], Decimal] = {}
            for e in ledger.rows(con, start=t0, end=t1 + dt.timedelta(microseconds=1)):
                if e.kind in ("fee", "overdraft") and e.subplan is not None:
                    k = (e.account_oid, e.subplan, e.kind)
                    booked[k] = booked.get(k, Decimal(0)) - e.amount
            lines = []
            for k in sorted(set(booked) | set(again)):
                was, now_ = booked.get(k, Decimal(0)), again.get(k, Decimal(0))
                a = self.accounts.get(k[0])
                lines.append({"account": a.name if a else f"{k[0]:06X}", "account_oid": k[0],
                              "subplan": k[1], "kind": k[2], "ledger": str(cur.quantize(was)),
                              "rerated": str(cur.quantize(now_)),
                              "difference": str(cur.quantize(now_ - was))})
            if not dry_run:
                when = self.core.clock()
                ledger.append(con, [Entry(ln["account_oid"], "adjustment",
                                          -Decimal(ln["difference"]), when, subplan=ln["subplan"],
                                          period_start=t0, period_end=t1,
                                          cause=f"rerate {ln['kind']}")
                                    for ln in lines if Decimal(ln["difference"])])
                if book.month == rating.month(last, zone)[0]:
                    # the month goes on from the re-rated state, merged into the
                    # current book (its other accounts' slots kept)
                    cur_book = load_book(con, book.month).with_slots(
                        book.slots["account"], book.slots["subplan"])
                    at = cur_book.index(book.slots["account"], book.slots["subplan"])
                    cur_book.slots[at] = book.slots
                    save_book(con, cur_book)
                self._changed()
            return {"from": t0.isoformat(), "to": t1.isoformat(), "dry_run": dry_run,
                    "lines": lines, "text": format_rerate(lines, t0, t1, zone, dry_run)}

    def _hourly(self, t0: dt.datetime, t1: dt.datetime) -> dict:
        """hour start -> {(account, subplan): (in, out)} from the hour rollups."""
        policies = self.core.snapshot.policies
        pol = {}
        for n, sp in self.settings.subplan.items():
            try:
                pol.setdefault(int(policies.policies[policies.find(sp.policy)].oid, 16),
                               []).append(n)
            except KeyError:
                continue
        unit_acct = {int(u, 16): a.oid for a in self.accounts.values() for u in a.units}
        out: dict = {}
        if not pol or not unit_acct:
            return out
        rows = self.con.execute(
            "SELECT period_start, unit_oid, policy_oid, dir, bytes FROM rollup WHERE kind = "
            "'hour' AND period_start >= ? AND period_start <= ? AND policy_oid IN "
            f"({', '.join(map(str, pol))})", [ledger.naive(t0), ledger.naive(t1)]).fetchall()
        for ps, u, p, d, b in rows:
            a = unit_acct.get(int(u))
            if a is None:
                continue
            hour = out.setdefault(ledger.aware(ps), {})
            for n in pol[int(p)]:
                v = hour.get((a, n), (0, 0))
                hour[(a, n)] = (v[0] + int(b), v[1]) if d == abi.Dir.IN else (v[0], v[1] + int(b))
        return out


def account_dict(a: Account, balance: Decimal, cur, why: str | None,
                 fair_use_rate=None) -> dict:
    """An account as `billing account` replies it (no password, only whether one is set)."""
    d = dataclasses.asdict(a)
    d.pop("password")
    d["has_password"] = bool(a.password)
    d["oid"] = a.oid_text
    d["credit_limit"] = str(cur.quantize(a.credit_limit))
    d["balance"] = str(cur.quantize(balance))
    d["blocked_for"] = why
    d["fair_use_rate"] = fair_use_rate
    d["units"] = list(a.units)
    for k in ("created", "changed", "blocked", "nextplan_from"):
        d[k] = d[k].isoformat() if d[k] else None
    return d


def account_list_text(rows: list[tuple[Account, Decimal, str | None]], cur) -> str:
    """`billing account list`: (account, balance, why blocked) by name."""
    lines = [f"{a.name} ({a.oid_text}) {'ACTIVE' if why is None else f'BLOCKED ({why})'} "
             f"bal: {cur.format(bal)}" for a, bal, why in rows]
    return "\n".join(lines) + ("\n" if lines else "")


def ledger_answer(name: str, rows: list[tuple[str | None, Entry]], balance: Decimal,
                  cur) -> dict:
    """`billing ledger NAME`: rows as (gateway, entry), in the order given
    (the gateway named with [central]), and the account's balance."""
    # the ledger keeps 9 places; people read the currency's
    return {"account": name,
            "rows": [{**r.to_dict(), "amount": cur.format(r.amount),
                      **({"gateway": g} if g is not None else {})} for g, r in rows],
            "balance": cur.format(balance)}


def format_rerate(lines, t0, t1, zone, dry_run: bool) -> str:
    head = (f"{'what-if' if dry_run else 'rerated'} {t0.astimezone(zone):%Y-%m-%d} .. "
            f"{t1.astimezone(zone):%Y-%m-%d %H:%M}")
    out = [head, f"{'account':<16} {'subplan':>7} {'kind':<9} {'ledger':>12} {'rerated':>12} "
                 f"{'difference':>12}"]
    for ln in lines:
        out.append(f"{ln['account']:<16} {ln['subplan']:>7} {ln['kind']:<9} {ln['ledger']:>12} "
                   f"{ln['rerated']:>12} {ln['difference']:>12}")
    total = sum((Decimal(ln["difference"]) for ln in lines), Decimal(0))
    out.append(f"total difference {total}" + ("" if dry_run else " (booked as adjustments)"))
    return "\n".join(out) + "\n"


def _when(text: str | None, zone=dt.timezone.utc) -> dt.datetime | None:
    """An ISO date or time; without an offset, in `zone` (billing's)."""
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"expected a date like 2026-11-01, got {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=zone)


def _number(text: str, what: str) -> int:
    if not text.isdigit():
        raise BadRequest(f"{what}: expected a plan number, got {text!r}")
    return int(text)


_ONE = {"name", "description", "email", "password", "plan", "nextplan", "credit-limit"}


def parse_account_words(words: list[str]) -> list[tuple]:
    """NeTAMS `account NNN` parameters, several in a row:
    name A | description B | email E | password P | plan N | nextplan N |
    block | beblock | unblock | balance add|remove|set ZZ | credit-limit ZZ |
    unit {name A | oid N} add|delete."""
    out, i = [], 0
    w = [x.replace("\u2013", "-") for x in words]
    while i < len(w):
        k = w[i].lower()
        if k in _ONE:
            if i + 1 >= len(w):
                raise BadRequest(f"{k}: expected a value")
            out.append((k, w[i + 1]))
            i += 2
        elif k in ("block", "beblock", "unblock"):
            out.append((k,))
            i += 1
        elif k == "balance":
            if i + 2 >= len(w) or w[i + 1].lower() not in ("add", "remove", "set"):
                raise BadRequest("balance: expected add, remove or set and an amount")
            out.append((k, w[i + 1].lower(), w[i + 2]))
            i += 3
        elif k == "unit":
            if i + 3 >= len(w) or w[i + 1].lower() not in ("name", "oid") or \
                    w[i + 3].lower() not in ("add", "delete"):
                raise BadRequest("unit: expected unit {name A | oid N} {add | delete}")
            out.append((k, w[i + 1].lower(), w[i + 2], w[i + 3].lower()))
            i += 4
        else:
            raise BadRequest(f"unknown account parameter {w[i]!r}; expected name, description, "
                             "email, password, plan, nextplan, block, beblock, unblock, "
                             "balance, credit-limit or unit")
    if not out:
        raise BadRequest("expected account parameters, e.g. balance add 10")
    return out


# --- the rating state: one blob per month, written with the drain -----------------

def load_book(con, start: dt.datetime) -> rating.Book:
    """The committed book of the month starting at `start` (empty if none)."""
    got = con.execute("SELECT slots FROM rating WHERE month = ?", [ledger.naive(start)]
                      ).fetchall()
    if not got:
        return rating.Book.empty(start)
    return rating.Book(start, np.frombuffer(got[0][0], rating.SLOT).copy())


def save_book(con, book: rating.Book) -> None:
    month = ledger.naive(book.month)
    con.execute("DELETE FROM rating WHERE month = ?", [month])
    con.execute("INSERT INTO rating VALUES (?, ?)", [month, book.slots.tobytes()])


# --- text --------------------------------------------------------------------------

def format_plans(settings: BillingSettings, numbers, snapshot) -> str:
    """The reference's `show plan` layout."""
    cur = settings.money
    out = []
    for n in numbers:
        p = settings.plan[n]
        out.append(f'Plan ID {n:06d} Name "{p.name}" Desc. "{p.description}"')
        for s in p.subplans:
            sp = settings.subplan[s]
            try:
                pol = snapshot.policies.policies[snapshot.policies.find(sp.policy)]
                policy = f"{pol.name}({pol.oid})"
            except KeyError:
                policy = sp.policy
            out.append(f"  Subplan ID {s:06d}")
            out.append(f"    Fee {cur.format(sp.fee)}, spread: '{sp.spread[0].upper()}', "
                       f"policy {policy}")
            out.append(f"    Incl. {_volumes(sp.included)}, Over. {_prices(sp.overdraft)}")
    return "\n".join(out) + ("\n" if out else "")


def _volumes(incl) -> str:
    from acctd.common.display import format_bytes
    if not incl:
        return "0"
    return " ".join(f"{'unlimited' if v is None else format_bytes(v)} {d}"
                    for d, v in incl.items())


def _prices(over) -> str:
    if not over:
        return "0/M"
    return " ".join(f"{v}/M {d}" for d, v in over.items())


def format_account(a: Account, balance: Decimal, cur, settings: BillingSettings, snapshot,
                   full: bool, why: str | None, zone=dt.timezone.utc) -> str:
    """The reference's `show account NAME [full]` layout; times in `zone`."""
    def t(x: dt.datetime | None) -> str:
        return x.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if x else "-"

    plan = settings.plan.get(a.plan)
    state = "ACTIVE" if why is None else f"BLOCKED ({why})"
    lines = [f"Name {a.name} ({a.oid_text}) {state} bal: {cur.format(balance)} "
             f"cred_lim: {cur.format(a.credit_limit)} plan: {plan.name if plan else '-'}"]
    if full:
        nxt = settings.plan.get(a.nextplan)
        lines.append(f"Plan {plan.name if plan else '-'} {a.plan or '-'} Nextplan "
                     f"{nxt.name if nxt else '-'} {a.nextplan or '-'}"
                     + (f" from {t(a.nextplan_from)[:10]}" if a.nextplan_from else ""))
        lines.append(f"Changed {t(a.changed)} Blocked {t(a.blocked)} Created {t(a.created)}")
        units = " ".join(f"{snapshot.name_of(u)} {u}" for u in a.units) or "-"
        lines.append(f"Email {a.email or '-'} Password {'set' if a.password else '-'} "
                     f"Units: {units}")
    return "\n".join(lines) + "\n"
