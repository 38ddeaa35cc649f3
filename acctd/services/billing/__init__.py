"""Billing (NeTAMS `service billing`): accounts, plans of subplans, an
append-only ledger whose sum is the balance, rating inside the drain's
transaction, and blocking for money (see service.py)."""
