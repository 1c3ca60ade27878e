"""What a bench's SQLite storage holds, read without Optuna (safe while the bench writes it): shared by the
tests that kill or interrupt a bench."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def finished_count(db: Path) -> int:
    """Trials finished (COMPLETE or PRUNED) in the storage ``db``; 0 before its tables exist."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.Error:  # tables not created yet
        return 0
