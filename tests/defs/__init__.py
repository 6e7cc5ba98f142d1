"""Small Definitions modules loaded by the CLI tests (``hybrid-dagster validate -m tests.defs.<name>``)."""
