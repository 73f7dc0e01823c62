"""Files below a clinic's data folder: walking them, keeping paths inside, writing atomically."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def atomic_write(path: Path, blob: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def walk_files(data_dir: Path, skip: set[Path]) -> list[Path]:
    """Every regular file under data_dir (any depth, any name), sorted, minus hidden ones and skip."""
    found: list[Path] = []
    for root, dirs, files in os.walk(data_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in skip)
        found.extend(root_path / f for f in sorted(files) if not f.startswith("."))
    return [p for p in found if p.resolve() not in skip and p.is_file()]


def inside_folder(key: str) -> bool:
    """A manifest path that stays inside the data folder (relative, no '..')."""
    pure = PurePosixPath(key)
    return not pure.is_absolute() and ".." not in pure.parts
