"""The tables of sql/schema.sql for the baseline, peer and floor runners, without importing ``pipeline``.

The bench derives them once from ``pipeline.schema.load_schema()`` and hands them to each runner as a
small JSON file (``--tables``): importing the ``pipeline`` package pulls in Luigi, Soda and psycopg
(about a second), which would be charged to the tools it is compared with. Run by hand without
``--tables``, a runner derives them itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str  # as declared, e.g. NUMERIC or NUMERIC(12, 2)
    primary_key: bool
    references: str | None
    collation: str | None = None  # COLLATE "…" as declared (the keys: "C")

    @property
    def ddl_type(self) -> str:
        """The type in a column definition, with its declared collation."""
        return self.pg_type + (f' COLLATE "{self.collation}"' if self.collation else "")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]

    @property
    def key(self) -> str:
        (pk,) = (c.name for c in self.columns if c.primary_key)
        return pk

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


def from_pipeline() -> list[dict]:
    from pipeline.schema import load_schema

    return [
        {
            "name": t.name,
            "columns": [
                {
                    "name": c.name,
                    "pg_type": c.pg_ddl_type,
                    "primary_key": c.primary_key,
                    "references": c.references,
                    "collation": c.collation,
                }
                for c in t.columns
            ],
        }
        for t in load_schema().tables
    ]


def dump(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(from_pipeline(), indent=2) + "\n")
    return path


def load(path: Path | None) -> list[Table]:
    """The tables in schema order (the referenced table first)."""
    data = json.loads(path.read_text()) if path else from_pipeline()
    return [Table(t["name"], tuple(Column(**c) for c in t["columns"])) for t in data]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
