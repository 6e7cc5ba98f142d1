"""Access tiers as code: declare the roles of each plane once, render Vault/OpenBao, Kubernetes and AWS IAM
from it, and apply the Vault/OpenBao part.

Example:
    .. code-block:: python

        from hybrid_dagster.access import AccessTiers, PlaneAccess, render_all

        plane = PlaneAccess(plane="eu-onprem", jurisdiction="EU", namespace="clinical-eu")
        access = AccessTiers(planes=[plane])
        render_all(access, Path("access-out"))
"""

from hybrid_dagster.access.apply import (
    Change as Change,
    apply_vault as apply_vault,
    plan_vault as plan_vault,
)
from hybrid_dagster.access.aws import iam_policy as iam_policy, render_iam as render_iam
from hybrid_dagster.access.kubernetes import (
    AccessRenderError as AccessRenderError,
    kubernetes_manifests as kubernetes_manifests,
    validate_manifests as validate_manifests,
)
from hybrid_dagster.access.load import (
    AccessDeclarationError as AccessDeclarationError,
    load_access as load_access,
)
from hybrid_dagster.access.model import (
    DEFAULT_TIERS as DEFAULT_TIERS,
    AccessTiers as AccessTiers,
    PlaneAccess as PlaneAccess,
    PlaneRole as PlaneRole,
    Tier as Tier,
)
from hybrid_dagster.access.render import render_all as render_all
from hybrid_dagster.access.vault import (
    approle_settings as approle_settings,
    kubernetes_role_settings as kubernetes_role_settings,
    policy_hcl as policy_hcl,
    render_vault as render_vault,
)
