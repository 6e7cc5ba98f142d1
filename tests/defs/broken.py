"""A module that fails to import."""

raise RuntimeError("boom: this code location is broken")
