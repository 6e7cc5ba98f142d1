"""Document ingest throughput: 1,000 mixed files into the documents and chunks tables, then a rerun.

Prints ONE JSON object on stdout (progress on stderr)::

    .venv/bin/python -m benchmarks.documents              # 1,000 files, 2 extraction processes
    .venv/bin/python benchmarks/documents.py --quick      # 100 files, a smoke test
    .venv/bin/python -m benchmarks.documents --help

The corpus is ~60% discharge-letter PDFs of 1-20 pages (fpdf2), ~25% call transcripts (WebVTT, SRT, JSON
turns in equal parts) and ~15% application logs with stack traces, from the example's generator
(:mod:`examples.clinical_ai.document_corpus`). Generating 600 PDFs takes a while, so the corpus is
cached under ``.work/documents-corpus/`` (git-ignored) and reused by later runs with the same size and
seed; ``--regenerate`` rebuilds it. PDFs use a core font (Latin-1) unless ``--unicode``: TrueType
subsetting makes generation slower, not ingestion.

Figures: ``files_per_s`` and ``mb_per_s`` of the first ingest into an empty warehouse (listing, hashing,
reading every page (PDFium text, pypdf metadata), chunking, three Iceberg commits per batch), and
``rerun_unchanged_s``, a second ingest with nothing changed (list, hash, compare with the table: no
extraction, no commit).
Goals: ``files_per_s`` >= 100 on 2 cores, ``rerun_unchanged_s`` <= 2. On a shared machine wall-clock
figures depend on the load (``load_average_1m``); ``first_run_cpu_s`` and ``files_per_cpu_s`` (CPU time
of the ingest and its extraction processes) do not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.clinical_ai.document_corpus import (
    LINK_RULES,
    synthetic_encounters,
    write_corpus,
)
from hybrid_dagster.documents.ingest import IngestConfig, ingest
from hybrid_dagster.residency import Classification, ResidencyPolicy
from hybrid_dagster.residency.guard import WriteIntent, check_write
from hybrid_dagster.resources import DataPlane

REPO_ROOT = Path(__file__).resolve().parents[1]


def corpus(root: Path, files: int, seed: int, unicode: bool, regenerate: bool) -> Path:
    """The cached corpus of ``files`` files (60% PDF, 25% transcripts, 15% logs)."""
    folder = root / f"files{files}-seed{seed}{'-unicode' if unicode else ''}"
    marker = folder / ".complete"
    if marker.exists() and not regenerate:
        print(f"documents: reusing the corpus in {folder}", file=sys.stderr)
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    letters, transcripts = round(files * 0.60), round(files * 0.25)
    logs = files - letters - transcripts
    print(f"documents: generating {letters} PDFs, {transcripts} transcripts, {logs} logs", file=sys.stderr)
    started = time.monotonic()
    write_corpus(
        folder,
        synthetic_encounters(max(1, letters // 2)),
        letters=letters,
        transcripts=transcripts,
        logs=logs,
        pages=(1, 20),
        seed=seed,
        bad_files=False,
        unicode=unicode,
    )
    marker.write_text(json.dumps({"generated_s": round(time.monotonic() - started, 1)}))
    return folder


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the extraction processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.documents", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--files", type=int, default=1000, help="files in the corpus (default 1000)")
    parser.add_argument("--quick", action="store_true", help="100 files: a smoke test")
    parser.add_argument("--workers", type=int, default=2, help="extraction processes (default 2)")
    parser.add_argument("--batch-files", type=int, default=250, help="files per Iceberg commit")
    parser.add_argument("--embedding", type=int, default=0, help="embedding dimensions (0: off)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--unicode", action="store_true", help="PDFs with a TrueType Unicode font")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / ".work" / "documents-corpus")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached corpus")
    args = parser.parse_args(argv)
    files = 100 if args.quick else args.files
    folder = corpus(args.cache, files, args.seed, args.unicode, args.regenerate)
    total_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name != ".complete")
    config = IngestConfig.model_validate(
        {
            "source": {"kind": "folder", "path": str(folder)},
            "namespace": "bench",
            "link_rules": LINK_RULES,
            "batch_files": args.batch_files,
            "workers": args.workers,
            "embedding": {"dimensions": args.embedding} if args.embedding else None,
        }
    )
    intent = WriteIntent("bench/documents", Classification.RESTRICTED, "eu-onprem", frozenset({"EU"}))
    with tempfile.TemporaryDirectory(prefix="hd-documents-") as tmp:
        plane = DataPlane(
            name="eu-onprem",
            jurisdiction="EU",
            region="fra-dc2",
            location="on_prem",
            warehouse=f"file://{tmp}",
        )

        def guard(identifier: str) -> None:
            check_write(intent, plane, ResidencyPolicy())

        print(f"documents: first ingest of {files} files ({total_bytes / 1e6:.1f} MB)", file=sys.stderr)
        cpu_before = _cpu_s()
        first = ingest(config, plane.load_catalog(), before_write=guard)
        cpu_s = _cpu_s() - cpu_before
        print("documents: rerun with nothing changed", file=sys.stderr)
        rerun = ingest(config, plane.load_catalog(), before_write=guard)
    assert rerun.batches == 0 and rerun.files_unchanged == files, "the rerun found changes"
    return {
        "files": files,
        "bytes": total_bytes,
        "units": first.tables["document_rows"],
        "chunks": first.tables["chunk_rows"],
        "dead_letters": first.tables["dead_letters"],
        "linked_fraction": round(first.tables["linked_documents"] / max(1, first.tables["documents"]), 4),
        "workers": args.workers,
        "batch_files": args.batch_files,
        "embedding_dimensions": args.embedding,
        "first_run_s": first.duration_s,
        "files_per_s": round(files / first.duration_s, 1),
        "mb_per_s": round(total_bytes / 1e6 / first.duration_s, 2),
        "rerun_unchanged_s": rerun.duration_s,
        "first_run_cpu_s": round(cpu_s, 2),
        "files_per_cpu_s": round(files / cpu_s, 1),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
