"""A module without any Definitions."""

ANSWER = 42
