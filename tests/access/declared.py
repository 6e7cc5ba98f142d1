"""A module holding one AccessTiers object, for ``hybrid-dagster access render -m``."""

from tests.access.declaration import declaration

access = declaration("mod")
