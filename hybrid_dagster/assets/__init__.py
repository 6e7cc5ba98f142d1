"""Asset factories: CDC tables (and, as capabilities land, documents, training, DR, compliance)."""

from hybrid_dagster.assets.cdc_tables import CdcTable as CdcTable, cdc_table_assets as cdc_table_assets
from hybrid_dagster.assets.documents import document_assets as document_assets
