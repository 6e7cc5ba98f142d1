"""Find an access declaration: an ``AccessTiers`` object in a Python module, or a YAML file (the
``defs.yaml`` of an ``AccessTiersComponent``, or the bare attributes).

Example:
    >>> load_access(yaml_file="examples/clinical_ai/defs/access/defs.yaml").planes[0].plane
    'eu-onprem'
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from hybrid_dagster.access.model import AccessTiers
from hybrid_dagster.errors import ValueFreeError


class AccessDeclarationError(ValueFreeError):
    """No access declaration could be found where the command line said."""


def load_access(
    *, module_name: str | None = None, attribute: str | None = None, yaml_file: str | None = None
) -> AccessTiers:
    """The declaration in ``module_name`` (attribute ``attribute`` or the only ``AccessTiers`` there) or
    in ``yaml_file`` (``{{ ... }}`` templates are not rendered here: load such files through dg)."""
    if (module_name is None) == (yaml_file is None):
        raise AccessDeclarationError("give exactly one of a module (-m) or a YAML file (-f)")
    if yaml_file is not None:
        path = Path(yaml_file)
        if not path.is_file():
            raise AccessDeclarationError(f"no YAML file at {path}")
        document = yaml.safe_load(path.read_text()) or {}
        attributes = document.get("attributes", document) if isinstance(document, dict) else None
        if not isinstance(attributes, dict):
            raise AccessDeclarationError(f"{path} holds no access tiers mapping")
        return AccessTiers.model_validate(attributes)
    assert module_name is not None
    module = importlib.import_module(module_name)
    if attribute is not None:
        value = getattr(module, attribute, None)
        if not isinstance(value, AccessTiers):
            raise AccessDeclarationError(f"module {module_name!r} has no AccessTiers called {attribute!r}")
        return value
    found = [name for name, value in vars(module).items() if isinstance(value, AccessTiers)]
    if len(found) != 1:
        raise AccessDeclarationError(
            f"module {module_name!r} has {len(found)} AccessTiers objects ({', '.join(found) or 'none'}): "
            "choose one with -a"
        )
    return AccessTiers.model_validate(getattr(module, found[0]))
