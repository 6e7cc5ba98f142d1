"""Tests of document ingestion: readers, chunking, link rules, incremental and crash-safe ingest, S3."""
