"""Meridian Health: a hospital group with EU and US data planes (the hybrid-dagster example)."""
