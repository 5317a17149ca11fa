"""What the benchmark scripts share: writing a result table without losing its notes."""

from __future__ import annotations

from pathlib import Path


def write_keeping_notes(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, keeping the hand-written ``## Notes`` section (and all after
    it) of the file it replaces."""
    old = path.read_text() if path.exists() else ""
    notes = old[old.index("## Notes") :] if "## Notes" in old else ""
    path.write_text(text + ("\n" + notes if notes else ""))
