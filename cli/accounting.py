"""acctctl: the counts and the model (NeTAMS show units, policies, list,
stat) and `flush`."""

from __future__ import annotations

import click

from acctctl.common import ask, echo, json_option, nbytes, out, run, table, when


@click.command()
@json_option
@click.pass_context
def flush(ctx, as_json):
    """Drain and commit now; returns after the commit."""
    def render(r):
        echo(f"drain {r['drain']} committed" + (
            f" at {when(r['ts'])}: {r['rows']} rows, {r['flows']} flows, {r['addrs']} addresses"
            if "ts" in r else ""))
    run(lambda: out(ask(ctx, "flush"), as_json, render))


@click.command()
@click.option("--type", "type_", type=click.Choice(["host", "cluster", "net", "user", "group"]))
@click.option("--name", help="Names containing this.")
@click.option("--email", help="E-mails containing this.")
@click.option("--policy", help="Units whose acct-policy list names this policy.")
@click.option("--sys-policy", "sys_policy", is_flag=True,
              help="Only units with a system policy set (blocked...).")
@click.option("--mac", "show_mac", is_flag=True, help="Show each unit's MAC (mac-control).")
@json_option
@click.pass_context
def units(ctx, type_, name, email, policy, sys_policy, show_mac, as_json):
    """The configured units, with filters (NeTAMS show units)."""
    def get():
        return ask(ctx, "units", type=type_, name=name, email=email, policy=policy,
                   sys_policy=sys_policy)
    cols = ["name", "oid", "type", "addresses", "parents", "acct-policy"]

    def render(us):
        extra = any(u.get("sys_policy") for u in us)
        table("units", cols + (["mac"] if show_mac else []) + (["sys-policy"] if extra else []),
              [[u["name"], u["oid"], u["type"], " ".join(u["addrs"] + u["nets"]),
                ",".join(u["parents"]), " ".join(u["acct_policy"])] +
               ([u.get("mac") or "-"] if show_mac else []) +
               ([" ".join(u.get("sys_policy", []))] if extra else []) for u in us])
    run(lambda: out(get(), as_json, render))


@click.command()
@json_option
@click.pass_context
def policies(ctx, as_json):
    """The configured policies and their targets."""
    run(lambda: out(ask(ctx, "policies"), as_json, lambda ps: table(
        "policies", ["name", "oid", "target"], [[p["name"], p["oid"], p["target"]] for p in ps])))


PERIODS = ("flow", "hour", "day", "week", "month")


@click.command("list")
@click.argument("unit", required=False)
@json_option
@click.pass_context
def list_(ctx, unit, as_json):
    """Per policy: in/out for the last drain, hour, day, week, month (show
    list full); without UNIT, every unit in turn."""
    def one(r):
        table(f"{r['unit']} ({r['oid']}), bytes", ["policy", "dir", *PERIODS],
              [[p["policy"], p["dir"], *(nbytes(p[k]["bytes"]) for k in PERIODS)]
               for p in r["policies"]])
        if "checks" in r:
            table("acct-policy walk, flows", ["policy", "check", "match"],
                  [[c["policy"], c["check"], c["match"]] for c in r["checks"]])

    def render(r):
        for u in r["units"] if unit is None else [r]:
            one(u)
    run(lambda: out(ask(ctx, "list", unit=unit), as_json, render))


@click.command()
@click.argument("unit")
@click.option("--period", type=click.Choice(["week", "month"]), default="week", show_default=True)
@json_option
@click.pass_context
def stat(ctx, unit, period, as_json):
    """Hourly rows of this week or month (show stat)."""
    run(lambda: out(ask(ctx, "stat", unit=unit, period=period), as_json, lambda r: table(
        f"{r['unit']} ({r['oid']}), {period}", ["hour", "policy", "dir", "packets", "bytes"],
        [[x["hour"], x["policy"], x["dir"], x["packets"], nbytes(x["bytes"])] for x in r["rows"]])))


COMMANDS = [flush, units, policies, list_, stat]
