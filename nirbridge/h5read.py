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
  can interrupt. Where the platform can fork, the read runs in a child process (with an
  address-space limit) that reports its progress, killed when no progress comes for ``timeout``
  seconds; the caller gets a
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
#: the default deadline in seconds (``nb.load(path, timeout=...)``) for a read that makes no progress
#: (one HDF5 call that does not return), plus one second per 100 MB of file
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
    declared: dict[str, tuple[tuple[int, ...], str, int]] = field(default_factory=dict)


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
    return _in_child(job, float(timeout), max_bytes, fname)


class _Reader:
    def __init__(self, path, fname, where, max_bytes, field_limits, precheck):
        self.path, self.fname, self.where = path, fname, where
        self.max_bytes, self.field_limits, self.precheck = max_bytes, field_limits, precheck
        self.beat: Callable[[str], None] = lambda where: None  # progress signal (the child sends it to the parent)

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
                tree, pending = self._walk(f)  # reads the small datasets on the way
                if self.precheck is not None:
                    self.precheck(tree)
                for p, ds in pending:
                    self.beat(p)
                    tree.data[p] = self._read(p, h5py.Dataset(ds))
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
        """One pass over the links of every group, with h5py's low-level API: a group's links and
        the addresses they point to come in one call, so the identity check opens nothing."""
        from h5py import h5d, h5g, h5l, h5o

        tree = H5Tree()
        self.declared_of = tree.declared.__getitem__
        try:
            seen = {h5o.get_info(f.id).addr}
        except Exception as e:  # a damaged superblock or root group
            raise self.fail("", f"(the root group) cannot be read ({type(e).__name__}: {e}); the file is corrupt",
                            "re-export or re-download the file") from None
        pending: list = []
        total = 0
        stack = [("", f.id, 0)]
        while stack:
            gpath, gid, depth = stack.pop()
            self.beat(gpath)
            if depth > MAX_GROUP_DEPTH:
                raise self.fail(gpath, f"is nested {depth} groups deep (at most {MAX_GROUP_DEPTH} are read)",
                                "flatten the graph or its metadata")
            entries: list = []
            try:
                gid.links.iterate(lambda n, info, out=entries: out.append((n, info.type, info.u)), info=True)
            except Exception as e:  # a damaged link table
                raise self.fail(gpath or "/", f"cannot be listed ({type(e).__name__}: {e}); the file is corrupt",
                                "re-export or re-download the file") from None
            names = []
            subgroups = []
            for raw, kind, addr in entries:
                try:
                    key = raw.decode("utf8")
                except UnicodeDecodeError:
                    raise self.fail(f"{gpath}/{raw.decode('utf8', 'replace')}", "has a name that is not UTF-8 text",
                                    "re-export the file with text names") from None
                names.append(key)
                p = f"{gpath}/{key}" if gpath else key
                if kind == h5l.TYPE_EXTERNAL:
                    try:
                        target = ":".join(x.decode("utf8", "replace") for x in gid.links.get_val(raw))
                    except Exception:  # a damaged link value: the message names the link anyway
                        target = "another file"
                    raise self.fail(p, f"is an external link to {target}; NIR files must be self-contained",
                                    "re-export the graph into one file")
                if kind == h5l.TYPE_SOFT:
                    try:
                        target = gid.links.get_val(raw).decode("utf8", "replace")
                    except Exception:  # a damaged link value: the message names the link anyway
                        target = "another path"
                    raise self.fail(p, f"is a soft link to {target}; NIR files hold no links", "re-export the graph")
                if kind != h5l.TYPE_HARD:
                    raise self.fail(p, f"is a link of kind {kind}, not a group or a dataset")
                if addr in seen:  # the second path to an object (a DAG), or a path back to an ancestor
                    raise self.fail(p, "is a second hard link to an object the file holds elsewhere (a shared "
                                    "or cyclic group); NIR files are trees", "re-export the graph")
                seen.add(addr)
                try:
                    obj = h5o.open(gid, raw)
                except Exception as e:  # a damaged object header
                    raise self.fail(p, f"cannot be opened ({type(e).__name__}: {e}); the file is corrupt",
                                    "re-export or re-download the file") from None
                if isinstance(obj, h5g.GroupID):
                    subgroups.append((p, obj, depth + 1))
                elif isinstance(obj, h5d.DatasetID):
                    try:
                        plist = obj.get_create_plist()
                        outside = plist.get_layout() == h5d.VIRTUAL or plist.get_external_count()
                    except Exception as e:
                        raise self.fail(p, f"has a damaged header ({type(e).__name__}: {e}); the file is corrupt",
                                        "re-export or re-download the file") from None
                    if outside:
                        raise self.fail(p, "stores its data outside the file (virtual or external dataset)",
                                        "re-export the graph into one file")
                    try:
                        total += self._declare(p, key, obj, tree)
                    except NirBridgeError:
                        raise
                    except Exception as e:
                        raise self.fail(p, f"has a damaged header ({type(e).__name__}: {e}); the file is corrupt",
                                        "re-export or re-download the file") from None
                    if total > self.max_bytes:
                        raise self.fail(p, f"brings the declared data of the file to {total} bytes, over the "
                                        f"budget of {self.max_bytes} bytes", "pass a larger max_bytes to "
                                        "nb.load if the file is trusted, or re-export it")
                    if tree.declared[p][2] <= _SMALL:
                        tree.data[p] = self._read_small(p, obj)
                    else:
                        pending.append((p, obj))
                else:
                    raise self.fail(p, f"is a {type(obj).__name__}, not a group or a dataset")
            tree.groups[gpath] = names
            stack.extend(reversed(subgroups))  # depth first, in file order
        return tree, pending

    def _declare(self, p: str, key: str, ds: Any, tree: H5Tree) -> int:
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
            stored = ds.get_storage_size()
            if nbytes > _MAX_EXPANSION * max(stored, 1):
                raise self.fail(p, f"declares shape {shape} ({nbytes} bytes) but the file stores {stored} bytes "
                                "of it; the file is corrupt")
        tree.declared[p] = (shape, dt.str, nbytes)
        return nbytes

    def _read_small(self, p: str, obj: Any) -> Any:
        """A small dataset's value as ``ds[()]`` gives it; numbers through the low-level API (no
        high-level Dataset object per field: files with 10,000 nodes hold 30,000 of them)."""
        import h5py
        import numpy as np
        from h5py import h5s, h5t

        shape, dts, _ = self.declared_of(p)
        dt = np.dtype(dts)
        vlen_text = dt.kind == "O" and h5py.check_string_dtype(obj.dtype) is not None
        if (dt.kind in "biufc" or vlen_text) and obj.get_space().get_simple_extent_type() != h5s.NULL:
            arr = np.empty(shape, dtype=obj.dtype if vlen_text else dt)
            try:
                if vlen_text:
                    obj.read(h5s.ALL, h5s.ALL, arr, mtype=h5t.py_create(obj.dtype))
                else:
                    obj.read(h5s.ALL, h5s.ALL, arr)
            except Exception as e:
                raise self.fail(p, f"cannot be read ({type(e).__name__}: {e}); the file is corrupt or truncated",
                                "re-export or re-download the file") from None
            return arr[()] if arr.ndim == 0 else arr
        return self._read(p, h5py.Dataset(obj))

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
def _in_child(job: _Reader, timeout: float, max_bytes: int, fname: str) -> H5Tree:
    """Run ``job`` in a forked child. The child sends a byte ``h`` as it makes progress (one per
    group walked, one per large dataset read) and then ``R`` and the pickled result; the parent
    stops the child when ``timeout`` seconds pass without a sign of progress, i.e. when the HDF5
    library is stuck in one call."""
    r, w = os.pipe()
    with warnings.catch_warnings():  # JAX warns on any fork; the child runs no JAX (it reads a file and exits)
        warnings.simplefilter("ignore")
        pid = os.fork()
    if pid == 0:  # the child: read, send the result or the error, exit without cleanup
        code = 0
        try:
            os.close(r)
            _limit_memory(max_bytes)
            job.beat = lambda where: _send(w, b"h" + where.encode("utf8", "replace").replace(b"\n", b" ") + b"\n")
            try:
                out: Any = ("ok", job.run())
            except NirBridgeError as e:
                out = ("error", type(e), str(e))
            except MemoryError:
                out = ("error", FileFormatError, f"{fname}: reading the file needs more memory than its declared "
                       "sizes allow; the file is corrupt. Fix: re-export the file")
            except BaseException as e:  # noqa: BLE001 - everything must reach the parent
                out = ("error", FileFormatError, f"{fname}: the file cannot be read ({type(e).__name__}: {e}). "
                       "Fix: re-export the file")
            _send(w, b"R\n" + pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks: list[bytes] = []
    started = False
    beats = b""
    where = ""
    end = time.monotonic() + timeout
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                node, fld = job.where(where) if where else ("<root graph>", None)
                raise node_error(FileFormatError, node, fld,
                                 f"{fname}: reading /{where} made no progress for {timeout:.3g} s (a damaged HDF5 "
                                 "structure can make the HDF5 library loop); the read was stopped",
                                 "re-export the file, or pass a larger timeout to nb.load if the file is large "
                                 "and trusted")
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            end = time.monotonic() + timeout  # progress
            if not started:
                beats += chunk
                k = 0 if beats.startswith(b"R\n") else beats.find(b"\nR\n")
                head = beats if k < 0 else beats[:k]
                lines = head.split(b"\n")
                done = [ln for ln in (lines if k >= 0 else lines[:-1]) if ln.startswith(b"h")]
                if done:
                    where = done[-1][1:].decode("utf8", "replace")
                if k < 0:
                    cut = beats.rfind(b"\n")
                    beats = beats[cut:] if cut >= 0 else beats  # keep the newline: "\nR\n" may span chunks
                    continue
                started, chunk = True, beats[k + (2 if k == 0 and beats.startswith(b"R\n") else 3):]
                beats = b""
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


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
