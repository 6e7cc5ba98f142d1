"""Change data capture: sources, the normalized change batch, and the Iceberg apply."""
