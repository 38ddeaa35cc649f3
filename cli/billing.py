"""acctctl: billing (NeTAMS service billing): plans, accounts, the ledger
and re-rating. Every change is an operator's command the daemon runs (and
`acctctl schedule add` can run later)."""

from __future__ import annotations

import click

from acctctl.common import ask, echo, json_option, out, run


@click.group()
def billing():
    """Plans, accounts and their ledger (NeTAMS service billing)."""


def _text(r) -> None:
    echo(r["text"] if r["text"] else "nothing")


@billing.command("plan")
@click.argument("number", type=int, required=False)
@click.argument("what", type=click.Choice(["account", "list"]), required=False)
@json_option
@click.pass_context
def plan(ctx, number, what, as_json):
    """The plans and their subplans (show plan [N [account|list]]): with
    `N account` or `N list`, the accounts on plan N."""
    run(lambda: out(ask(ctx, "billing-plan", plan=number, what=what), as_json, _text))


@billing.command("account", context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, metavar="NAME [full] | list | create NAME [...] | set NAME ...")
@json_option
@click.pass_context
def account(ctx, words, as_json):
    """Show, create and change accounts (NeTAMS account ...).

    \b
    NAME [full]        the account (full: plans, dates, units)
    list               every account with its state and balance
    create NAME [...]  a new account (credit limit: default-credit-limit),
                       optionally with the words of `set`
    set NAME ...       name A | description B | email E | password P |
                       plan N | nextplan N (from the next month) |
                       block | beblock | unblock |
                       balance add|remove|set ZZ | credit-limit ZZ |
                       unit name A|oid N add|delete"""
    w = list(words)
    if not w or w == ["list"]:
        run(lambda: out(ask(ctx, "billing-account"), as_json, _text))
    elif w[0] == "create" and len(w) >= 2:
        run(lambda: out(ask(ctx, "billing-account-create", name=w[1], words=w[2:]), as_json,
                        _text))
    elif w[0] == "set" and len(w) >= 3:
        run(lambda: out(ask(ctx, "billing-account-set", account=w[1], words=w[2:]), as_json,
                        _text))
    elif len(w) in (1, 2) and w[1:] in ([], ["full"]):
        run(lambda: out(ask(ctx, "billing-account", account=w[0], full=w[1:] == ["full"]),
                        as_json, _text))
    else:
        raise click.UsageError("expected NAME [full], list, create NAME [...] or set NAME ...")


@billing.command("ledger")
@click.argument("name")
@click.option("--since", default=None, help="From this date (billing's time zone).")
@click.option("--until", default=None, help="Before this date.")
@json_option
@click.pass_context
def ledger(ctx, name, since, until, as_json):
    """An account's ledger rows: every fee, overdraft, payment and adjustment
    (with [central], or --central, every gateway's, each named by its gateway)."""
    def render(r):
        for x in r["rows"]:
            what = f"subplan {x['subplan']}" if x["subplan"] is not None else (x["cause"] or "")
            at = f" [{x['gateway']}]" if x.get("gateway") else ""   # with [central]
            echo(f"{x['seq']:>6} {x['ts'][:19]} {x['kind']:<10} {x['amount']:>14} {what}{at}")
        if r.get("unavailable"):
            echo(r["unavailable"])
        echo(f"balance {r['balance']}")
    run(lambda: out(ask(ctx, "billing-ledger", account=name, since=since, until=until),
                    as_json, render))


@billing.command("beblock")
@click.argument("name")
@click.option("--undo", is_flag=True, help="Lift the holder's own block (never the operator's).")
@json_option
@click.pass_context
def beblock(ctx, name, undo, as_json):
    """Block an account as its holder would (NeTAMS beblock), or undo it."""
    run(lambda: out(ask(ctx, "billing-beblock", account=name, undo=undo), as_json, _text))


@billing.command("rerate")
@click.option("--from", "start", required=True, help="A date in the first month to rate again.")
@click.option("--to", "end", default=None, help="Up to this date (default: the last drain).")
@click.option("--dry-run", is_flag=True, help="Only show the difference (what-if).")
@json_option
@click.pass_context
def rerate(ctx, start, end, dry_run, as_json):
    """Rate a period again from the stored hour rollups with the current
    tariff: the difference from the ledger, booked as adjustments unless
    --dry-run (a what-if preview of a tariff change)."""
    run(lambda: out(ask(ctx, "billing-rerate", start=start, end=end, dry_run=dry_run),
                    as_json, _text))


COMMANDS = [billing]
