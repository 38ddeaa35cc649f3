"""Helpers every layer shares: durable files, secret files, running programs,
how figures are displayed."""
