"""Runs the ORIGINAL cowrieprocessor bulk loader (datagen24/cowrieprocessor) on the given files, into SQLite.

Usage: python original_bulk.py SRC_DIR SQLITE_PATH FILE...
  SRC_DIR      an exported tree of the original's source (imported at run time, never copied into this repo)
  SQLITE_PATH  the database file to create (removed first)

The loader is called as its own CLI does (`BulkLoader(engine, BulkLoaderConfig())` after `apply_migrations`),
without enrichment: the CLI module itself imports the enrichment stack (redis, vt-py, ...), which a bulk load
without `--enrich` never uses. Prints one JSON line: events_read, events_inserted, events_invalid,
events_quarantined, duplicates_skipped, files_processed and load_seconds (the `load_paths` call alone).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    src, db, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.path.insert(0, src)
    from cowrieprocessor.db.engine import create_engine_from_settings
    from cowrieprocessor.db.migrations import apply_migrations
    from cowrieprocessor.loader.bulk import BulkLoader, BulkLoaderConfig
    from cowrieprocessor.settings import DatabaseSettings

    if os.path.exists(db):
        os.remove(db)
    engine = create_engine_from_settings(DatabaseSettings(url=f"sqlite:///{db}"))
    apply_migrations(engine)
    loader = BulkLoader(engine, BulkLoaderConfig())
    t0 = time.perf_counter()
    m = loader.load_paths(files)
    dt = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "events_read": m.events_read,
                "events_inserted": m.events_inserted,
                "events_invalid": m.events_invalid,
                "events_quarantined": m.events_quarantined,
                "duplicates_skipped": m.duplicates_skipped,
                "files_processed": m.files_processed,
                "load_seconds": round(dt, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
