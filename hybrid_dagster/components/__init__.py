"""Dagster components (``dg``) so that data planes, the residency policy and CDC tables live in YAML.

Example:
    .. code-block:: yaml

        # defs/planes/defs.yaml
        type: hybrid_dagster.components.DataPlanesComponent
        attributes:
          planes:
            - {name: eu-onprem, jurisdiction: EU, region: fra-dc2, location: on_prem,
               warehouse: "file:///srv/eu/warehouse"}
"""

from hybrid_dagster.components.access_tiers import (
    AccessTiersComponent as AccessTiersComponent,
    ResolvedPlaneAccess as ResolvedPlaneAccess,
    ResolvedTier as ResolvedTier,
)
from hybrid_dagster.components.cdc_tables import (
    CdcTableAttributes as CdcTableAttributes,
    CdcTablesComponent as CdcTablesComponent,
    ResolvedCdcSource as ResolvedCdcSource,
)
from hybrid_dagster.components.data_planes import (
    DataPlanesComponent as DataPlanesComponent,
    ResolvedDataPlane as ResolvedDataPlane,
    ResolvedTransferRoute as ResolvedTransferRoute,
    attributes_model as attributes_model,
    config_resolver as config_resolver,
    plane_resource_key as plane_resource_key,
)
from hybrid_dagster.components.documents import (
    DocumentsComponent as DocumentsComponent,
    ResolvedDocumentSource as ResolvedDocumentSource,
    ResolvedLinkRule as ResolvedLinkRule,
)
