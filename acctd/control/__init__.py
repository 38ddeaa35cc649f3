"""The control API: the command registry, the servers and the client."""
