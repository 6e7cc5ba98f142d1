"""Getting started: one plane, two pinned assets (docs/getting-started.md shows these files verbatim)."""
