"""Importing other accountants' configurations."""
