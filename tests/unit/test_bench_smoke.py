"""The benchmarks' own stand-ins for the daemon drift when a service learns
to ask for more of it: run the ones that stand in, at a toy size, so a
broken `make bench` shows here and not only when someone measures."""

from acctd.bench import billing, billing_invoices


def test_the_billing_bench_runs_on_its_stand_in_core():
    within_day, new_day = billing.bench_rate(n_accounts=20, tries=1)
    assert within_day > 0 and new_day > 0


def test_the_invoicing_bench_runs():
    assert billing_invoices.bench_invoices(n=20) > 0
