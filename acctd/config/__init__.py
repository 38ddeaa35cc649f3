"""The configuration: the settings schema and the TOML loader (see loader.py
for the file format). Everything else imports it from here."""

from acctd.config.loader import (DEFAULT_DB, LEVELS, Config, DynamicIp, FlowLogConf, Interface,
                                 Processor, Server, SessionHooks, Storage, User, load, loads)
from acctd.errors import ConfigError

__all__ = ["DEFAULT_DB", "LEVELS", "Config", "ConfigError", "DynamicIp", "FlowLogConf",
           "Interface", "Processor", "Server", "SessionHooks", "Storage", "User", "load", "loads"]
