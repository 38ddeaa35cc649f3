"""acctctl billing: payments in, postpaid terms, invoices, statements and
95th percentile figures per account and month (the daemon's invoicing
service, acctd/services/billing/invoicing.py)."""

from __future__ import annotations

import os
import sys

import click

from acctctl.billing import billing   # these commands join `acctctl billing`
from acctctl.common import ask, echo, json_option, out, run


@billing.group()
def payments():
    """Payments received, from files."""


@payments.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--chunk", default=500, show_default=True, help="Payments per request.")
@json_option
@click.pass_context
def payments_import(ctx, path, chunk, as_json):
    """Import a CSV file of date,account,amount,reference (a header line
    is allowed). A payment whose reference is in the ledger already is
    skipped, so a file imported twice adds nothing. The whole file is
    checked first: a bad row is named by its line and nothing is imported."""
    from rich.console import Console
    from rich.progress import Progress

    from acctd.errors import BadRequest
    from acctd.services.billing.money import Currency
    from acctd.services.billing.payments import PaymentError, parse
    source = os.path.basename(path)

    def go() -> None:
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise BadRequest(f"{source}: not UTF-8 text (byte {e.start})") from None
        try:
            # the currency's places are checked by the daemon; here only the form
            rows = [p.to_dict() for p in parse(text, Currency("", 9), source)]
        except PaymentError as e:
            raise BadRequest(str(e)) from None
        ask(ctx, "billing-payments-import", rows=rows, source=source, check=True)
        totals = {"added": 0, "duplicates": 0}
        with Progress(console=Console(stderr=True), transient=not sys.stderr.isatty()) as bar:
            task = bar.add_task("importing payments", total=len(rows))
            for i in range(0, len(rows), chunk):
                part = rows[i:i + chunk]
                got = ask(ctx, "billing-payments-import", rows=part, source=source)
                for k in totals:
                    totals[k] += got[k]
                bar.advance(task, len(part))
        out(totals, as_json, lambda t: echo(
            f"{t['added']} payments added, {t['duplicates']} already imported"))
    run(go)


@billing.command()
@click.argument("account")
@click.argument("words", nargs=-1, required=True,
                metavar="postpaid|prepaid [exempt|not-exempt] [transit|not-transit]")
@json_option
@click.pass_context
def terms(ctx, account, words, as_json):
    """An account's terms: postpaid (a monthly invoice, blocked some days
    after its due date unless paid) or prepaid; exempt accounts (schools,
    hospitals) are never blocked for an unpaid invoice; transit accounts are
    charged their 95th percentile (percentile-price per Mbit/s) each month."""
    run(lambda: out(ask(ctx, "billing-terms", account=account, words=list(words)), as_json,
                    lambda r: echo(f"{r['account']}: {'postpaid' if r['postpaid'] else 'prepaid'}"
                                   f"{', exempt' if r['exempt'] else ''}"
                                   f"{', transit' if r['transit'] else ''}")))


def _monthly(fn):
    """An account's report of a month, as text or --json."""
    fn = click.pass_context(json_option(click.option(
        "--month", metavar="YYYY-MM", default=None, help="The month (default: this one).")(fn)))
    return billing.command()(click.argument("account")(fn))


def _text(reply) -> None:
    echo(reply["text"])


@_monthly
def invoice(ctx, account, month, as_json):
    """An account's invoice of a month, as issued (a draft before it is)."""
    run(lambda: out(ask(ctx, "billing-invoice", account=account, month=month), as_json, _text))


@billing.command("invoices")
@click.argument("account")
@json_option
@click.pass_context
def invoices(ctx, account, as_json):
    """An account's issued invoices: number, month, due date, amount, paid."""
    run(lambda: out(ask(ctx, "billing-invoices", account=account), as_json, _text))


@_monthly
def statement(ctx, account, month, as_json):
    """An account's statement of a month: every ledger row between the balances."""
    run(lambda: out(ask(ctx, "billing-statement", account=account, month=month), as_json, _text))


@_monthly
def percentile(ctx, account, month, as_json):
    """The 95th percentile of an account's traffic in a month (5-minute samples)."""
    run(lambda: out(ask(ctx, "billing-percentile", account=account, month=month), as_json,
                    _text))


COMMANDS = ()   # all of them are in the billing group
