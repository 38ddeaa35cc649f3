"""The login page of a campus or hotspot (NeTAMS login.cgi), one for both
places that serve it: the console's /hotspot (acctd/web/app.py) and
[captive]'s own small server in the daemon (acctd/aaa/captive.py). Both
post the form to the login service's `portal` (the daemon's portal-login
command), so they check and say the same; this renders the answer."""

from __future__ import annotations

import os

TEMPLATE = "portal.html"
ASK = "Log in to use the network"


def render(action: str, addr: str | None, reply: dict | None = None, logout: bool = False,
           csrf: str | None = None, stylesheet: str | None = None) -> str:
    """The page: the form (posting to `action`), or what `reply` (the
    login service's portal answer) says; csrf: the console's form token."""
    done = bool(reply and reply["ok"])
    title = ("Logged out" if logout else "Logged in") if done else ASK
    return _template().render(title=title, done=done, reply=reply, addr=addr, action=action,
                              csrf=csrf, stylesheet=stylesheet)


_env = None


def _template():
    global _env
    if _env is None:
        import jinja2
        _env = jinja2.Environment(loader=jinja2.FileSystemLoader(
            os.path.join(os.path.dirname(__file__), "templates")), autoescape=True,
            trim_blocks=True, lstrip_blocks=True)
    return _env.get_template(TEMPLATE)
