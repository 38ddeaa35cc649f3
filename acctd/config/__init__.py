"""The configuration: one settings-schema mechanism for every table
(schema.py) and the TOML loader that puts the tables together (loader.py,
which documents the file format). The loader's names are reached from here,
loaded on first use, because the tables it collects import the schema."""

from acctd.errors import ConfigError

_LOADER = ("DEFAULT_DB", "Config", "Interface", "Processor", "StorageSettings", "UnitTable",
           "PolicyTable", "SECTIONS", "load", "loads", "summary", "error_at")

__all__ = ["ConfigError", *_LOADER]


def __getattr__(name: str):
    if name in _LOADER:
        from acctd.config import loader
        return getattr(loader, name)
    raise AttributeError(f"module 'acctd.config' has no attribute {name!r}")
