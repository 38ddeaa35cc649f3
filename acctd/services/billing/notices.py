"""Billing notices in English and Russian, queued through the alerter:
the balance fell under the low-balance threshold, the account was blocked
for money (its balance under the credit limit, or an unpaid invoice), a
payment was received; each with a link to its units' traffic pages when
[html] url is set."""

from __future__ import annotations

KINDS = ("low_balance", "blocked", "payment")

_TEXT = {
    "en": {
        "low_balance": ("[acctd] {account}: low balance {balance}",
                        "The balance of account {account} is {balance}, under {threshold}.\n"
                        "Please top it up before it reaches the credit limit {limit}."),
        "blocked": ("[acctd] {account}: access blocked ({why})",
                    "Account {account} is blocked: {why}.\nBalance: {balance}.\n"
                    "Access returns as soon as the payment arrives."),
        "payment": ("[acctd] {account}: payment of {amount} received",
                    "A payment of {amount} (reference {reference}) was received for account "
                    "{account}.\nBalance: {balance}."),
    },
    "ru": {
        "low_balance": ("[acctd] {account}: низкий баланс {balance}",
                        "Баланс счёта {account} составляет {balance}, это меньше {threshold}.\n"
                        "Пополните его, пока он не достиг кредитного лимита {limit}."),
        "blocked": ("[acctd] {account}: доступ закрыт ({why})",
                    "Счёт {account} заблокирован: {why}.\nБаланс: {balance}.\n"
                    "Доступ откроется, как только поступит оплата."),
        "payment": ("[acctd] {account}: получен платёж {amount}",
                    "Для счёта {account} получен платёж {amount} (номер {reference}).\n"
                    "Баланс: {balance}."),
    },
}

# a link to a unit's traffic page, or (no unit) to the reports
_LINK = {"en": ("Traffic of {unit}: {url}", "Traffic: {url}"),
         "ru": ("Трафик {unit}: {url}", "Трафик: {url}")}
_ACCOUNT_PAGE = {"en": "Your account: {url}", "ru": "Ваш лицевой счёт: {url}"}

# why an account is blocked, in the notice's language
_WHY = {
    "en": {"money": "the balance is under the credit limit",
           "invoice": "invoice {number} is unpaid since {due}"},
    "ru": {"money": "баланс ниже кредитного лимита",
           "invoice": "счёт {number} не оплачен с {due}"},
}


def why(language: str, reason: str, **fields) -> str:
    return _WHY[language][reason].format(**fields)


def render(kind: str, language: str = "en", links=(), page: str | None = None,
           **fields) -> tuple[str, str]:
    """(subject, body) of a notice; fields: account, balance and what the
    kind names (threshold, limit; why; amount, reference); links: (unit or
    None, url) pairs, one line each after the text; page: the account's own
    page instead of them ([html] account-pages)."""
    subject, body = _TEXT[language][kind]
    if page is not None:
        lines = _ACCOUNT_PAGE[language].format(url=page) + "\n"
    else:
        lines = "".join(_LINK[language][unit is None].format(unit=unit, url=url) + "\n"
                        for unit, url in links)
    return subject.format(**fields), body.format(**fields) + "\n" + ("\n" + lines if lines else "")
