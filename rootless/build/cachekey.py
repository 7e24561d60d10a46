"""Layer cache keys.

A step's key is the SHA-256 of (the parent key, the step as planned).  The
parent key chains back to the stage's base: an image (its ID, which is the
digest of its config, and the platform), ``scratch``, or the base stage's
last key.  What goes in, per step:

* RUN: the argv (shell included), the whole environment it sees (ENV and
  ARG values; not the predefined proxy ARGs, as Docker), USER, WORKDIR,
  network mode, mounts, a heredoc script;
* COPY/ADD: destination, flags (--chown, --chmod, --exclude, ...), heredoc
  contents, and the *content* of what is copied: from the build context a
  digest over each file's relative path, type, permission bits, size,
  bytes and link target (not owners, since COPY makes them 0:0 or
  --chown; not times, as BuildKit); from another stage that stage's last
  key; from an image its ID;
* RUN --mount=type=bind: the content of the source, as for COPY (a context
  path's files, a stage's last key, an image's ID); cache and tmpfs mounts
  only by their options, never by their content; ``build --network`` when
  the RUN gives no --network;
* WORKDIR: the path and USER (the directory's owner).

So an unchanged rebuild finds every key again, and changing one copied
file changes that COPY's key and, through the parent chain, every later
one.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat as _stat
from dataclasses import asdict

from rootless.build.fscopy import CopyError, SourceFS, resolve_sources
from rootless.build.plan import CopyStep, RunStep, Step, WorkdirStep

VERSION = "rootless-build-cache-v1"


def _h(obj) -> str:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def base_key(kind: str, ident: str, platform: str) -> str:
    """Key of a stage's starting point: ("image", image id) / ("scratch", "") / ("stage", its last key)."""
    if kind == "stage":
        return ident
    return _h({"v": VERSION, "base": kind, "id": ident, "platform": platform})


def step_description(step: Step) -> dict:
    if isinstance(step, RunStep):
        return {"op": "run", "argv": list(step.argv), "env": list(step.env), "user": step.user,
                "workdir": step.workdir, "network": step.network,
                "mounts": [asdict(m) for m in step.mounts],
                "script": [step.script.name, step.script.content] if step.script else None}
    if isinstance(step, CopyStep):
        return {"op": "add" if step.is_add else "copy", "sources": list(step.sources),
                "contents": [[c.path, c.data] for c in step.contents], "dest": step.dest,
                "chown": step.chown, "chmod": step.chmod, "exclude": list(step.exclude), "parents": step.parents,
                "checksum": step.checksum, "unpack": step.unpack, "keep_git_dir": step.keep_git_dir}
    if isinstance(step, WorkdirStep):
        return {"op": "workdir", "path": step.path, "user": step.user}
    raise TypeError(f"not a step: {step!r}")


def step_key(parent: str, step: Step, platform: str, inputs: str = "") -> str:
    """``inputs``: the content digest of a COPY/ADD's sources (see ``content_digest``)."""
    return _h({"v": VERSION, "parent": parent, "platform": platform, "step": step_description(step),
               "inputs": inputs})


class FileHasher:
    """SHA-256 of files, remembered by (path, size, mtime, inode, ctime) for the session."""

    def __init__(self) -> None:
        self._memo: dict[tuple, str] = {}

    def digest(self, path, st: os.stat_result) -> str:
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        d = self._memo.get(key)
        if d is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
            d = h.hexdigest()
            self._memo[key] = d
        return d


def _walk_records(fs: SourceFS, rel: str, prefix: str, hasher: FileHasher, out: list, exclude=None) -> None:
    st = fs.lstat(rel)
    if st is None:
        return
    if exclude is not None and prefix and exclude.excluded(prefix):
        return
    mode = st.st_mode
    rec: list = [prefix, _stat.S_IFMT(mode), _stat.S_IMODE(mode)]
    if _stat.S_ISREG(mode):
        try:
            rec += [st.st_size, hasher.digest(fs.host(rel), st)]
        except OSError as e:
            raise CopyError(f"{fs.label}: cannot read /{rel}: {e.strerror}",
                            hint=f"make it readable (chmod u+r {fs.host(rel)}) or exclude it in .dockerignore"
                            ) from None
    elif _stat.S_ISLNK(mode):
        rec.append(fs.readlink(rel))
    elif _stat.S_ISCHR(mode) or _stat.S_ISBLK(mode):
        rec.append(st.st_rdev)
    out.append(rec)
    if _stat.S_ISDIR(mode):
        for name in fs.listdir(rel):
            _walk_records(fs, f"{rel}/{name}" if rel else name, f"{prefix}/{name}" if prefix else name,
                          hasher, out, exclude)


def tree_digest(fs: SourceFS, rel: str, hasher: FileHasher) -> str:
    """Digest of the tree at ``rel`` in ``fs`` (a RUN --mount=type=bind source of the context)."""
    recs: list = []
    _walk_records(fs, rel, "", hasher, recs)
    return _h(recs)


def content_digest(fs: SourceFS, sources, hasher: FileHasher, exclude=None) -> str:
    """Digest of everything a COPY reads from ``fs`` (raises CopyError for a missing path)."""
    resolved, empty = resolve_sources(fs, sources)
    records: list = [["empty-globs", empty]]
    for rel in resolved:
        recs: list = []
        _walk_records(fs, rel, "", hasher, recs, exclude)
        records.append([rel, recs])
    return _h(records)
