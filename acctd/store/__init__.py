"""Storage: DuckDB, the rows of one drain, rollups, report queries and schema migrations."""
