"""Dagster component: the access tiers of the planes declared in YAML.

The attributes are those of :class:`~hybrid_dagster.access.AccessTiers` (templates rendered, validators run
on the rendered values), so a wrong declaration stops the code location from loading. The component adds
no Dagster definitions: ``hybrid-dagster access render -f defs.yaml`` and ``access apply`` read the same
file and render or apply it.
"""

from __future__ import annotations

from typing import Annotated

import dagster as dg
from pydantic import Field

from hybrid_dagster.access import DEFAULT_TIERS, AccessTiers, PlaneAccess, Tier
from hybrid_dagster.components.data_planes import config_resolver

ResolvedPlaneAccess = Annotated[PlaneAccess, config_resolver(PlaneAccess)]
ResolvedTier = Annotated[Tier, config_resolver(Tier)]


class AccessTiersComponent(dg.Component, dg.Model, dg.Resolvable):
    """Roles per plane (e.g. reader, engineer, admin) and the classifications each tier may touch.

    Example:
        .. code-block:: yaml

            # defs/access/defs.yaml
            type: hybrid_dagster.components.AccessTiersComponent
            attributes:
              planes:
                - {plane: eu-onprem, jurisdiction: EU, namespace: clinical-eu,
                   bucket: meridian-eu, bucket_prefix: warehouse}
                - {plane: us-cloud, jurisdiction: US, namespace: clinical-us,
                   bucket: meridian-us, bucket_prefix: warehouse, region: us-east-1}
              tiers:
                - {name: reader, classifications: [public, internal], capability: read}
                - {name: engineer, classifications: [public, internal, confidential, restricted],
                   capability: write}
                - {name: admin, classifications: [public, internal, confidential, restricted],
                   capability: admin}
    """

    planes: list[ResolvedPlaneAccess] = Field(description=AccessTiers.model_fields["planes"].description)
    tiers: list[ResolvedTier] = Field(
        default_factory=lambda: list(DEFAULT_TIERS), description=AccessTiers.model_fields["tiers"].description
    )
    kv_mount: str = Field(default="secret", description=AccessTiers.model_fields["kv_mount"].description)
    approle_mount: str = Field(
        default="approle", description=AccessTiers.model_fields["approle_mount"].description
    )
    kubernetes_mount: str = Field(
        default="kubernetes", description=AccessTiers.model_fields["kubernetes_mount"].description
    )
    secret_id_ttl: str = Field(
        default="24h", description=AccessTiers.model_fields["secret_id_ttl"].description
    )

    def access(self) -> AccessTiers:
        """The declaration as :class:`AccessTiers` (its validators run here).

        Example:
            >>> tree.load_component("access", AccessTiersComponent).access().roles()[0].name  # doctest: +SKIP
            'hd-eu-onprem-reader'
        """
        return AccessTiers(
            planes=list(self.planes),
            tiers=list(self.tiers),
            kv_mount=self.kv_mount,
            approle_mount=self.approle_mount,
            kubernetes_mount=self.kubernetes_mount,
            secret_id_ttl=self.secret_id_ttl,
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        self.access()  # validate the whole declaration when the code location loads
        return dg.Definitions()
