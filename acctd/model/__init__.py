"""The accounting model, pure (numpy only: no bcc, no DuckDB): addresses, units, policies, system policies, sessions and what enforcement should hold."""
