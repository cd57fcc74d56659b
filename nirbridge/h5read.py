"""A bounded reader for untrusted HDF5 files: every object visited once, sizes checked before reading.

:func:`read_tree` turns an HDF5 file into an :class:`H5Tree`, a flat picture of it (the children of
every group, the value of every dataset) that the NIR interpretation in :mod:`nirbridge.io` walks
without touching HDF5 again. The reader guarantees, for any file:

* **each object is visited once**, by object identity (its address in the file): a hard link to a
  group seen before (a DAG of groups, or a link back to an ancestor, i.e. a cycle) is refused, as
  are soft and external links, virtual and external datasets and stored datatypes. The walk is
  iterative, so it costs time linear in the number of objects, whatever the nesting depth;
* **a size budget, checked from the declared shapes and dtypes before any data is read**: the
  total over all datasets (``max_bytes``), a bound per named small field (``field_limits``: a shape
  or a stride holds a handful of numbers, never megabytes), and a bound on how much a chunked
  dataset may expand beyond the bytes the file stores for it (a few KB cannot hold gigabytes of
  real data; unwritten chunks take no space);
* small datasets are read first and handed to a ``precheck`` callback (so shape rules run on the
  declared shapes before large weights are decompressed);
* **no hang**: a damaged file can make the HDF5 library loop inside a C call, which no Python code
  can interrupt. Where the platform can fork, the read runs in a child process with a deadline
  (and an address-space limit), killed when it runs over; the caller gets a
  :class:`~nirbridge.errors.FileFormatError` instead of a process that never returns. Forking
  costs a few milliseconds; everything after the read (building the graph) runs in the caller.

Errors are :class:`~nirbridge.errors.NirBridgeError` subclasses whose message names the HDF5 path;
``where(path)`` (given by the caller) turns a path into ``(node, field)`` for the message.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import FileFormatError, NirBridgeError, node_error

__all__ = ["H5Tree", "read_tree", "DEFAULT_MAX_BYTES", "DEFAULT_TIMEOUT"]

#: the default total of declared dataset sizes a file may hold (``nb.load(path, max_bytes=...)``)
DEFAULT_MAX_BYTES = 1 << 30
#: the default deadline in seconds for reading one file (``nb.load(path, timeout=...)``), plus one
#: second per 100 MB of file
DEFAULT_TIMEOUT = 10.0
#: deepest group nesting read (a NIR graph nested 1000 deep has about 2000 levels of groups)
MAX_GROUP_DEPTH = 4200
#: a dataset bigger than this must be backed by at least 1/_MAX_EXPANSION of its size in the file
#: (gzip, which nir.write uses, compresses at most about 1032:1)
_BIG = 1 << 26
_MAX_EXPANSION = 1100
#: datasets up to this many bytes are read in the first pass (before ``precheck``)
_SMALL = 1 << 16


@dataclass
class H5Tree:
    """The content of an HDF5 file: group paths to their child names (in file order) and dataset
    paths to their values (as ``ds[()]`` reads them). The root group is ``""``."""

    groups: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    declared: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)


Where = Callable[[str], "tuple[str, str | None]"]


def read_tree(path: str, fname: str, where: Where, *, max_bytes: int | None = None,
              timeout: float | None = None, field_limits: Mapping[str, int] | None = None,
              precheck: Callable[[H5Tree], None] | None = None, isolate: bool | None = None) -> H5Tree:
    """Read every group and dataset of the HDF5 file at ``path`` within the bounds above.

    ``fname`` names the file in messages; ``where`` maps an HDF5 path to ``(node, field)``;
    ``field_limits`` maps a field name to the most elements a dataset of that name may declare
    (applied to datasets that are not inside a ``metadata`` group); ``precheck`` sees the tree
    after the small datasets are read and before the large ones are. ``isolate`` (default: where
    ``os.fork`` exists) runs the read in a child process with the deadline ``timeout``."""
    max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
    if timeout is None:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        timeout = DEFAULT_TIMEOUT + size / 1e8
    job = _Reader(path, fname, where, max_bytes, dict(field_limits or {}), precheck)
    if isolate is None:
        isolate = hasattr(os, "fork")
    if not isolate:
        return job.run()
    return _in_child(job.run, float(timeout), max_bytes, fname)


class _Reader:
    def __init__(self, path, fname, where, max_bytes, field_limits, precheck):
        self.path, self.fname, self.where = path, fname, where
        self.max_bytes, self.field_limits, self.precheck = max_bytes, field_limits, precheck

    def fail(self, h5path: str, problem: str, fix: str = "re-export the file") -> NirBridgeError:
        node, fld = self.where(h5path)
        return node_error(FileFormatError, node, fld, f"{self.fname}: /{h5path} {problem}", fix)

    def run(self) -> H5Tree:
        import h5py

        try:
            f = h5py.File(self.path, "r")
        except Exception as e:
            raise FileFormatError(
                f"{self.fname}: not a readable HDF5 file ({type(e).__name__}: {e}); it may be truncated or "
                "not a NIR file. Fix: re-export or re-download the file") from None
        try:
            with f:
                tree, pending = self._walk(f)
                for p, ds in pending:
                    if ds.nbytes <= _SMALL:
                        tree.data[p] = self._read(p, ds)
                if self.precheck is not None:
                    self.precheck(tree)
                for p, ds in pending:
                    if p not in tree.data:
                        tree.data[p] = self._read(p, ds)
                return tree
        except NirBridgeError:
            raise
        except MemoryError:
            raise FileFormatError(f"{self.fname}: reading the file needs more memory than its declared sizes "
                                  "allow; the file is corrupt. Fix: re-export the file") from None
        except Exception as e:  # h5py raises assorted errors on a damaged file
            raise FileFormatError(
                f"{self.fname}: the HDF5 content is corrupt ({type(e).__name__}: {e}). Fix: re-export the file"
            ) from None

    def _walk(self, f: Any) -> tuple[H5Tree, list]:
        import h5py

        tree = H5Tree()
        seen = {h5py.h5o.get_info(f.id).addr}
        pending: list = []
        total = 0
        stack = [("", f, 0)]
        while stack:
            gpath, group, depth = stack.pop()
            if depth > MAX_GROUP_DEPTH:
                raise self.fail(gpath, f"is nested {depth} groups deep (at most {MAX_GROUP_DEPTH} are read)",
                                "flatten the graph or its metadata")
            names = list(group.keys())
            tree.groups[gpath] = names
            subgroups = []
            for key in names:
                p = f"{gpath}/{key}" if gpath else key
                link = group.get(key, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    raise self.fail(p, f"is an external link to {link.filename}:{link.path}; NIR files must be "
                                    "self-contained", "re-export the graph into one file")
                if isinstance(link, h5py.SoftLink):
                    raise self.fail(p, f"is a soft link to {link.path}; NIR files hold no links", "re-export the graph")
                if not isinstance(link, h5py.HardLink):
                    raise self.fail(p, f"is a {type(link).__name__}, not a group or a dataset")
                obj = group.get(key)
                info = h5py.h5o.get_info(obj.id)
                if info.addr in seen or info.rc != 1:
                    raise self.fail(p, f"is a second hard link to an object the file holds elsewhere ({info.rc} links;"
                                    " a shared or cyclic group); NIR files are trees", "re-export the graph")
                seen.add(info.addr)
                if isinstance(obj, h5py.Group):
                    subgroups.append((p, obj, depth + 1))
                elif isinstance(obj, h5py.Dataset):
                    total += self._declare(p, key, obj, tree)
                    if total > self.max_bytes:
                        raise self.fail(p, f"brings the declared data of the file to {total} bytes, over the "
                                        f"budget of {self.max_bytes} bytes", "pass a larger max_bytes to "
                                        "nb.load if the file is trusted, or re-export it")
                    pending.append((p, obj))
                else:
                    raise self.fail(p, f"is a {type(obj).__name__}, not a group or a dataset")
            stack.extend(reversed(subgroups))  # depth first, in file order
        return tree, pending

    def _declare(self, p: str, key: str, ds: Any, tree: H5Tree) -> int:
        if ds.is_virtual or ds.external:
            raise self.fail(p, "stores its data outside the file (virtual or external dataset)",
                            "re-export the graph into one file")
        dt = ds.dtype
        if dt.kind not in "biufcSUO" or dt.fields is not None or dt.subdtype is not None:
            raise self.fail(p, f"has dtype {dt}, which a NIR file never holds")
        shape = tuple(int(d) for d in (ds.shape or ()))
        n = 1
        for d in shape:
            n *= d
        limit = self.field_limits.get(key)
        if limit is not None and "/metadata" not in f"/{p}" and n > limit:
            raise self.fail(p, f"declares {n} elements (shape {shape}); this field holds at most {limit}")
        nbytes = n * dt.itemsize
        if nbytes > _BIG:
            stored = ds.id.get_storage_size()
            if nbytes > _MAX_EXPANSION * max(stored, 1):
                raise self.fail(p, f"declares shape {shape} ({nbytes} bytes) but the file stores {stored} bytes "
                                "of it; the file is corrupt")
        tree.declared[p] = (shape, dt.str)
        return nbytes

    def _read(self, p: str, ds: Any) -> Any:
        try:
            v = ds[()]
        except MemoryError:
            raise
        except Exception as e:
            raise self.fail(p, f"cannot be read ({type(e).__name__}: {e}); the file is corrupt or truncated",
                            "re-export or re-download the file") from None
        return v


# ---------------------------------------------------------------------- the child process
def _in_child(fn: Callable[[], H5Tree], timeout: float, max_bytes: int, fname: str) -> H5Tree:
    r, w = os.pipe()
    with warnings.catch_warnings():  # JAX warns on any fork; the child runs no JAX (it reads a file and exits)
        warnings.simplefilter("ignore")
        pid = os.fork()
    if pid == 0:  # the child: read, send the result or the error, exit without cleanup
        code = 0
        try:
            os.close(r)
            _limit_memory(max_bytes)
            try:
                out: Any = ("ok", fn())
            except NirBridgeError as e:
                out = ("error", type(e), str(e))
            except MemoryError:
                out = ("error", FileFormatError, f"{fname}: reading the file needs more memory than its declared "
                       "sizes allow; the file is corrupt. Fix: re-export the file")
            except BaseException as e:  # noqa: BLE001 - everything must reach the parent
                out = ("error", FileFormatError, f"{fname}: the file cannot be read ({type(e).__name__}: {e}). "
                       "Fix: re-export the file")
            data = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    end = time.monotonic() + timeout
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                raise FileFormatError(
                    f"{fname}: reading the file did not finish within {timeout:.3g} s (a damaged HDF5 structure "
                    "can make the HDF5 library loop); the read was stopped. Fix: re-export the file, or pass a "
                    "larger timeout to nb.load if the file is large and trusted")
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _reap(pid)
    try:
        out = pickle.loads(b"".join(chunks))
    except Exception:
        raise FileFormatError(f"{fname}: the reader stopped without an answer (the HDF5 library crashed on the "
                              "file); the file is corrupt. Fix: re-export the file") from None
    if out[0] == "ok":
        return out[1]
    raise out[1](out[2])


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _limit_memory(max_bytes: int) -> None:
    """Cap the child's address space at what it uses now plus room for the budget (a decompression
    bomb then fails with MemoryError instead of taking the machine's memory)."""
    try:
        import resource

        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        want = used + 3 * max_bytes + (1 << 30)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        if soft == resource.RLIM_INFINITY or want < soft:
            resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    except (OSError, ValueError, ImportError):
        pass
