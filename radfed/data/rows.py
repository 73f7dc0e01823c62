"""A clinic's preprocessed pixels on disk, read a batch at a time: `PixelFile`, `ImageRows`.

Holding every image as a float32 tensor costs 0.2 MB per 224 px grey image (0.6 MB in
2.5D): a clinic with 100k radiographs would need tens of GB. Instead the decoded pixels
are float16 rows of one flat file (the pixel cache entry, or an anonymous temporary file
without a cache folder), and a split is the list of rows its samples use. Training,
evaluation and feature extraction index it like a tensor (``rows[idx]``, ``rows[a:b]``)
and get float32 tensors of one batch, bit-identical to what the in-memory path built.

Rows are read with ``os.preadv``, not through a memory map: the pages of a mapping a
process has touched count as its resident memory until the kernel evicts them, so an
epoch over a mapped 45 GB file would look (and, under cgroup limits, be charged) like
45 GB resident. Read into a buffer, they stay in the page cache only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROW_DTYPE = np.dtype(np.float16)


def _read_exactly(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``fd`` at ``offset`` (preadv may return short counts)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"row file ended early ({offset + done} bytes)")
        done += got


class RowFile:
    """``count`` rows of one shape and dtype in a file from byte ``offset`` on, opened once.

    ``order[i]`` is where logical row i is stored (None: at i). The descriptor stays
    valid when the file is replaced or pruned meanwhile. Pickled, it reopens its path;
    an anonymous temporary file cannot be pickled.
    """

    def __init__(
        self,
        fd: int,
        path: Path | None,
        count: int,
        row_shape: tuple[int, ...],
        dtype: Any,
        offset: int = 0,
        order: np.ndarray | None = None,
    ) -> None:
        self.fd, self.path, self.count, self.offset = fd, path, int(count), int(offset)
        self.row_shape, self.dtype = tuple(int(d) for d in row_shape), np.dtype(dtype)
        self.order = None if order is None else np.asarray(order, dtype=np.int64)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize

    def read(self, rows: Any) -> np.ndarray:
        """(K x row shape) of logical ``rows`` (any order, repeats allowed); runs of
        adjacent stored rows are read with one call."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if rows.size and (rows.min() < 0 or rows.max() >= self.count):
            raise IndexError(f"row out of range (0..{self.count - 1})")
        stored = rows if self.order is None else self.order[rows]
        unique, inverse = np.unique(stored, return_inverse=True)
        out = np.empty((len(unique), *self.row_shape), dtype=self.dtype)
        if len(unique):
            breaks = np.flatnonzero(np.diff(unique) != 1) + 1
            view = memoryview(out).cast("B")
            for a, b in zip([0, *breaks.tolist()], [*breaks.tolist(), len(unique)]):
                _read_exactly(
                    self.fd,
                    view[a * self.row_bytes : b * self.row_bytes],
                    self.offset + int(unique[a]) * self.row_bytes,
                )
        return out[inverse.ravel()]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:
            raise TypeError(
                "rows without a cache folder live in an anonymous temporary file "
                "and cannot be pickled; load with cache_dir"
            )
        state = dict(self.__dict__)
        state["fd"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.fd = os.open(self.path, os.O_RDONLY)


class PixelFile(RowFile):
    """``count`` decoded S x S float16 rows of a clinic, in the order decoding finished;
    logical row i (files in load order, their frames in order: what
    `radfed.data.slices.assemble` numbers) is stored at ``order[i]``."""

    def __init__(self, fd: int, path: Path | None, size: int, count: int, order: np.ndarray | None = None) -> None:
        super().__init__(fd, path, count, (size, size), ROW_DTYPE, 0, order)
        self.size = int(size)

    @classmethod
    def open(cls, path: Path, size: int, count: int, order: np.ndarray | None = None) -> PixelFile:
        return cls(os.open(path, os.O_RDONLY), Path(path), size, count, order)


class PixelWriter:
    """Decoded stacks of ``n_files`` files, appended as they arrive (in any order), so a
    load never holds more than the results in flight. ``path``: where the finished file
    goes (written beside it and renamed); None: an anonymous temporary file."""

    def __init__(self, size: int, n_files: int, path: Path | None = None) -> None:
        self.size, self.path = int(size), path
        self.starts = np.full(n_files, -1, dtype=np.int64)
        self.written = 0
        if path is None:
            self._file = tempfile.TemporaryFile(prefix="radfed-pixels-")
            self._tmp: Path | None = None
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            self._file = open(self._tmp, "wb")

    def put(self, index: int, stack: np.ndarray | None) -> None:
        """File ``index``'s rows (F x S x S), or None for a file that did not decode."""
        if stack is None or not len(stack):
            return
        if stack.shape[1:] != (self.size, self.size):
            raise ValueError(f"decoded stack of shape {stack.shape}, expected (F, {self.size}, {self.size})")
        self.starts[index] = self.written
        self._file.write(np.ascontiguousarray(stack, dtype=ROW_DTYPE).tobytes())
        self.written += len(stack)

    def finish(self, counts: list[int]) -> PixelFile:
        """The finished file; ``counts`` are the rows per file (in load order)."""
        pieces = [np.arange(s, s + c, dtype=np.int64) for s, c in zip(self.starts.tolist(), counts) if c]
        order = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        if len(order) != self.written:
            raise RuntimeError("decoded rows do not match the files' frame counts")
        identity = bool(np.array_equal(order, np.arange(len(order))))
        self._file.flush()
        if self._tmp is None:
            fd = os.dup(self._file.fileno())
            self._file.close()
            return PixelFile(fd, None, self.size, self.written, None if identity else order)
        self._file.close()
        os.replace(self._tmp, self.path)  # type: ignore[arg-type]
        return PixelFile.open(
            self.path,
            self.size,
            self.written,  # type: ignore[arg-type]
            None if identity else order,
        )

    def abort(self) -> None:
        self._file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def as_pixel_file(pixels: np.ndarray) -> PixelFile:
    """An in-memory M x S x S array as an anonymous PixelFile (tests, small tools)."""
    writer = PixelWriter(int(pixels.shape[-1]), 1)
    writer.put(0, pixels)
    return writer.finish([len(pixels)])


def positions(index: Any, n: int) -> np.ndarray:
    """Sample positions selected by an int, slice, sequence, array or integer tensor."""
    if isinstance(index, slice):
        return np.arange(*index.indices(n), dtype=np.int64)
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    found = np.asarray(index)
    if found.dtype == np.bool_ or not np.issubdtype(found.dtype, np.integer) and found.size:
        raise IndexError("rows are selected by integer positions")
    found = found.astype(np.int64).ravel()
    if found.size and (found.min() < -n or found.max() >= n):
        raise IndexError(f"position out of range for {n} rows")
    return np.where(found < 0, found + n, found)


class ImageRows(torch.utils.data.Dataset):
    """A split's images (N x C x S x S float32 in [0, 1]) read on demand from a PixelFile.

    Indexed like the tensor it replaces: ``rows[i]`` (C x S x S), ``rows[a:b]`` and
    ``rows[index_tensor]`` (K x C x S x S), ``rows[i, 0]`` (the rest of a tuple applies to
    the sample); ``len`` and ``shape`` as a tensor's. Only what is asked for is read, so a
    loop over batches holds one batch. As a torch Dataset, item i is ``rows[i]``.
    """

    dtype = torch.float32

    def __init__(self, pixels: PixelFile, rows: np.ndarray) -> None:
        self.pixels = pixels
        rows = np.asarray(rows, dtype=np.int64)
        self.rows = rows[:, None] if rows.ndim == 1 else rows  # N x C: the rows of each sample's channels

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.rows.shape[1], self.pixels.size, self.pixels.size))

    def __getitem__(self, index: Any) -> torch.Tensor:
        rest: tuple[Any, ...] = ()
        if isinstance(index, tuple):
            index, rest = index[0], index[1:]
        scalar = isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0)
        chosen = self.rows[positions(index, len(self))]
        size = self.pixels.size
        pixels = self.pixels.read(chosen).reshape(len(chosen), chosen.shape[1], size, size)
        out = torch.from_numpy(pixels.astype(np.float32))
        if scalar:
            out = out[0]
        return out[rest] if rest else out

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        """A DataLoader's batch in one read."""
        return list(self[np.asarray(indices, dtype=np.int64)])

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The images in order, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            yield self[start : start + batch_size]

    def tensor(self) -> torch.Tensor:
        """Every image as one tensor (for tests and small folders: the whole split in memory)."""
        return self[:]


class StoredRows:
    """Every row of a RowFile as a float32 tensor indexed like one (``rows[idx]``,
    ``rows[a:b]``, ``len``, ``shape``), read on demand: e.g. cached backbone features."""

    dtype = torch.float32

    def __init__(self, file: RowFile) -> None:
        self.file = file

    def __len__(self) -> int:
        return self.file.count

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.file.count, *self.file.row_shape))

    def __getitem__(self, index: Any) -> torch.Tensor:
        scalar = isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0)
        out = torch.from_numpy(self.file.read(positions(index, len(self))).astype(np.float32))
        return out[0] if scalar else out

    def tensor(self) -> torch.Tensor:
        """Every row as one tensor in memory."""
        return self[:]


class ConcatRows:
    """Several splits' images as one (``torch.cat`` for rows read on demand): the
    centralised baseline pools every clinic's training split without loading them."""

    dtype = torch.float32

    def __init__(self, parts: list[Any]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.ends = np.cumsum([len(p) for p in self.parts], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.parts[0].shape[1:])) if self.parts else torch.Size((0,))

    def __getitem__(self, index: Any) -> torch.Tensor:
        scalar = isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0)
        wanted = positions(index, len(self))
        part_of = np.searchsorted(self.ends, wanted, side="right")
        starts = np.concatenate([[0], self.ends[:-1]]).astype(np.int64)
        out: torch.Tensor | None = None
        for k in np.unique(part_of).tolist():
            mask = part_of == k
            got = self.parts[k][torch.from_numpy(wanted[mask] - starts[k])]
            if out is None:
                out = torch.empty((len(wanted), *got.shape[1:]), dtype=got.dtype)
            out[torch.from_numpy(mask)] = got
        if out is None:
            out = torch.zeros((0, *self.shape[1:]))
        return out[0] if scalar else out


# What training, evaluation and feature extraction take: a tensor or rows read on demand.
Images = torch.Tensor | ImageRows


def image_batches(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """``images`` in order, ``batch_size`` at a time, whichever kind they are."""
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]
