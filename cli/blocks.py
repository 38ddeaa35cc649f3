"""acctctl: blocks and limits: a unit's system policy and run-time units
(`unit`), who the kernel blocks (`blocked`), quotas, and what the routers
were given (`aclserver`)."""

from __future__ import annotations

import click

from acctctl.common import ask, echo, json_option, out, run


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, required=True,
                metavar="NAME sys-... | add host|user NAME [ip A|auto] [parent G]... | del NAME")
@json_option
@click.pass_context
def unit(ctx, words, as_json):
    """A unit's system policy; add or delete units made at run time.

    NAME sys-deny|sys-allow|sys-{deny|allow}-{quota|login|money|mac}: the
    kernel drops or passes the unit's addresses at once, and it stays so
    across restarts (NeTAMS unit ... sys-deny).

    add host|user NAME [ip A|auto] [parent G]... [email E]: a unit made at
    run time, kept in the database; `ip auto` takes the next free address of
    [processor] auto-assign and prints it. del NAME removes such a unit."""
    w = list(words)
    if w[0] == "add":
        if len(w) < 3 or w[1] not in ("host", "user"):
            raise click.UsageError("unit add host|user NAME [ip A|auto] [parent G]... [email E]")
        args = {"kind": w[1], "name": w[2], "parents": []}
        rest = w[3:]
        while rest:
            if len(rest) < 2 or rest[0] not in ("ip", "parent", "email"):
                raise click.UsageError(f"unit add: expected ip, parent or email, got {rest[0]!r}")
            if rest[0] == "parent":
                args["parents"].append(rest[1])
            else:
                args[rest[0]] = rest[1]
            rest = rest[2:]
        run(lambda: out(ask(ctx, "unit-add", **args), as_json, lambda r: echo(
            f"unit {r['unit']} added: {r['type']} {r['oid']}, ip {r['ip'] or '-'}")))
    elif w[0] == "del" and len(w) == 2:
        run(lambda: out(ask(ctx, "unit-del", name=w[1]), as_json, lambda r: echo(
            f"unit {r['deleted']} ({r['oid']}) deleted")))
    elif len(w) == 2:
        run(lambda: out(ask(ctx, "sys-policy", unit=w[0], policy=w[1]), as_json, _sys_policy))
    else:
        raise click.UsageError("expected NAME sys-..., add ... or del NAME")


def _sys_policy(r) -> None:
    echo(f"{r['unit']}: {' '.join(r['sys_policy']) or 'no system policy'}")
    for prefix, words in sorted(r["changed"].items()):
        echo(f"  {prefix:<40} {' '.join(words) or 'passes'}")


@click.command()
@json_option
@click.pass_context
def blocked(ctx, as_json):
    """Who the kernel blocks now, read back from its maps, and why."""
    run(lambda: out(ask(ctx, "blocked"), as_json, lambda b: [
        echo(f"{prefix:<40} {' '.join(words)}") for prefix, words in sorted(b.items())]))


@click.group()
def quota():
    """Traffic quotas (NeTAMS service quota), kept in the database."""


@quota.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, required=True)
@json_option
@click.pass_context
def quota_set(ctx, words, as_json):
    """NAME [hour|day|week|month AMOUNT in|out|sum]... [soft-threshold N]
    [policy P] [block-policy P] [active|inactive] [notify ...]

    Example: acctctl quota set alice day 3M in month 100M sum. AMOUNT takes
    K, M, G (1024-based); 0 removes that quota. A hard quota blocks the unit
    in the kernel at the next drain; the next period lets it back."""
    run(lambda: out(ask(ctx, "quota-set", argv=list(words)), as_json, lambda r: echo(
        f"quota of {r['unit']} ({r['oid']}): {r['set']}")))


@quota.command("show")
@click.argument("unit", required=False)
@click.option("--list", "list_only", is_flag=True, help="Only the units with an active quota.")
@json_option
@click.pass_context
def quota_show(ctx, unit, list_only, as_json):
    """Usage, quota, ratio and [+]/[-] per limit (NeTAMS show quota)."""
    def go():
        r = ask(ctx, "quota-show", unit=unit, list=list_only)
        out(r["units"], True, None) if as_json else echo(r["text"] or "no quota")
    run(go)


@click.group()
def aclserver():
    """The blocks pushed to routers (NeTAMS acl-server)."""


def render_aclserver(r: dict) -> None:
    """One paragraph per back-end: state, router uptime, then pushed,
    pending and refused addresses, one a line."""
    if not r["configured"]:
        echo("aclserver: no [aclserver] in the configuration")
        return
    lines = [f"resync every {r['delay']} s; never-block: "
             f"{', '.join(r['never_block']) or 'none'}"]
    for b in r["backends"]:
        up = b["router_uptime"]
        lines.append(f"{b['name']} ({b['kind']}): {'up' if b['up'] else 'down'}, router uptime "
                     f"{'unknown' if up is None else f'{up:.0f} s'}, {len(b['pushed'])} pushed, "
                     f"{len(b['pending'])} pending, {b['resyncs']} resyncs"
                     + (f", expiry {b['expiry']:g} s" if b["expiry"] else ""))
        lines += [f"  pushed   {a}  {why}" for a, why in b["pushed"].items()]
        lines += [f"  pending  {a}  {what}" for a, what in b["pending"].items()]
        lines += [f"  refused  {a}  {why}" for a, why in b["refused"].items()]
        if b["last_error"]:
            lines.append(f"  last error: {b['last_error']}")
    echo("\n".join(lines))


@aclserver.command("show")
@json_option
@click.pass_context
def aclserver_show(ctx, as_json):
    """Per back-end: what is pushed, what is pending, the last error and
    the router's uptime."""
    run(lambda: out(ask(ctx, "aclserver-show"), as_json, render_aclserver))


COMMANDS = [unit, blocked, quota, aclserver]
