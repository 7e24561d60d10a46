"""The builder: runs a build plan, step by step, with the layer cache.

For each requested platform (one image each; several make a manifest list):

1. the Dockerfile is parsed once; the stage graph is made for the platform
   (``plan.stage_graph``); only the stages the target needs are built, in
   order;
2. each stage starts from ``scratch``, an image (pulled when missing, for the
   stage's platform) or an earlier stage's result; ``plan.dispatch_stage``
   turns its instructions into filesystem steps, history and config;
3. each step gets a cache key (parent key + step + the content it copies);
   a hit reuses the layer; a miss runs the step on a fresh overlay upper dir
   over the stage's layers: RUN in a rootless container of our runtime
   (``runstep``), COPY/ADD/WORKDIR in the user namespace here; the upper dir
   becomes a layer (``snapshot``) and a cache entry;
4. the target stage becomes an image: config (with history and diff_ids),
   OCI manifest, blobs in the store; tags are written only when every
   platform succeeded (a failing build creates or moves no tag).

Everything the build uses or makes (base images' layers, cache hits, new
layers, its config/manifest/index blobs) is pinned by name in ``_pins``
before it is looked at or made visible, until the image is recorded: rmi and
image prune running meanwhile leave it (docs/internals.md, Concurrency).

Library code: it reports through a Reporter and raises BuildError subtypes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from archsupport.platform import Platform, host_platform
from rootless.build import plan as P
from rootless.build.cache import BuildCache, CacheEntry
from rootless.build.cachekey import FileHasher, base_key, content_digest, step_key
from rootless.build.config import RunConfig
from rootless.build.instructions import Dockerfile, parse_dockerfile
from rootless.errors import BuildError, RootlessError
from rootless.report import Reporter


class StepFailed(BuildError):
    """A RUN step exited with a non-zero status (or a COPY failed): names step, command, status."""


@dataclass(frozen=True)
class BuildOptions:
    context: Path
    dockerfile_text: bytes
    dockerfile_name: str = "Dockerfile"          # as shown in errors
    dockerfile_path: Path | None = None          # for <Dockerfile>.dockerignore
    tags: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    platforms: tuple[Platform, ...] = ()         # () = the host's
    no_cache: bool = False
    pull: str = "missing"                        # missing | always | never
    labels: tuple[tuple[str, str], ...] = ()
    network: str = ""                            # default network of RUN steps
    quiet: bool = False
    has_context: bool = True                     # False: the Dockerfile came from stdin, ``context`` is empty


@dataclass
class Layer:
    diff_id: str
    blob: dict                  # descriptor JSON (mediaType, digest, size)


@dataclass
class StageResult:
    index: int
    platform: Platform
    layers: list[Layer]
    history: list[dict]
    plan: P.StagePlan
    key: str
    created: str = ""
    time: float = 0.0


@dataclass
class PlatformResult:
    platform: Platform
    image_id: str
    manifest_digest: str
    manifest_bytes: bytes
    config_bytes: bytes
    cached_steps: int = 0
    run_steps: int = 0


@dataclass
class BuildResult:
    images: list[PlatformResult]
    index_digest: str = ""
    tags: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)

    @property
    def image_id(self) -> str:
        """What ``build`` prints: the image ID, or the manifest list digest for several platforms."""
        return self.index_digest or self.images[0].image_id


def rfc3339(t: float | None = None) -> str:
    t = time.time() if t is None else t
    frac = f"{t % 1:.9f}"[2:].rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + (f".{frac}" if frac else "") + "Z"


def _parse_time(s: str) -> float:
    """RFC 3339 (any fraction) -> seconds since the epoch; 0 when unknown."""
    import datetime
    import re

    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", s or "")
    if not m:
        return 0.0
    tz = m.group(3) or "Z"
    dt = datetime.datetime.fromisoformat(m.group(1) + ("+00:00" if tz == "Z" else tz))
    return dt.timestamp() + (float("0" + m.group(2)) if m.group(2) else 0.0)


OCI_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}


class Builder:
    def __init__(self, store, reporter: Reporter | None = None, *, output=None):
        self.store = store
        self.config = store.config
        self.reporter = reporter or Reporter()
        self.output = output            # where RUN steps' stdout/stderr go (a fd number or None = inherit)
        self.cache = BuildCache(store)
        self.hasher = FileHasher()
        self._context = None
        self._pins = None
        self._images: dict[tuple[str, str], object] = {}
        self._multi = False             # building several platforms: errors name the platform
        self.cached_steps = 0
        self.executed_steps = 0

    # ------------------------------------------------------------------
    def build(self, opts: BuildOptions) -> BuildResult:
        from rootless.image.locks import Pins

        df = parse_dockerfile(opts.dockerfile_text, opts.dockerfile_name)
        if df.syntax and not df.syntax.startswith(("docker/dockerfile", "docker.io/docker/dockerfile")):
            self.reporter.warn(f"{opts.dockerfile_name}: syntax={df.syntax} is ignored: rootless uses its "
                               f"built-in Dockerfile frontend")
        for w in df.warnings:
            self.reporter.warn(w)
        platforms = list(opts.platforms) or [host_platform()]
        self._multi = len(platforms) > 1
        self._pins = Pins()
        self.store.ensure_dirs()
        try:
            results = []
            warnings: list[str] = []
            for plat in platforms:
                results.append(self._build_platform(df, plat, opts, warnings, multi=len(platforms) > 1))
            return self._commit(results, opts, warnings)
        finally:
            self._pins.release()
            import shutil

            for dl in getattr(self, "_downloads", {}).values():
                shutil.rmtree(os.path.dirname(dl.path), ignore_errors=True)

    # ------------------------------------------------------------------
    def _context_fs(self, opts: BuildOptions):
        if self._context is None:
            from rootless.build.dockerignore import ContextFilter, load_ignore
            from rootless.build.fscopy import ContextFS

            patterns = load_ignore(opts.context, opts.dockerfile_path)
            cf = ContextFilter(opts.context, patterns)
            entries = cf.walk()
            self._context = ContextFS(opts.context, entries, unreadable=cf.unreadable, absent=not opts.has_context)
        return self._context

    def _plan_options(self, plat: Platform, opts: BuildOptions) -> P.PlanOptions:
        return P.PlanOptions(target_platform=plat, build_platform=host_platform(), build_args=opts.build_args,
                             target=opts.target, labels=opts.labels)

    def _image(self, ref: str, plat: Platform, policy: str):
        k = (ref, str(plat))
        img = self._images.get(k)
        if img is None:
            img = self._pinned_image(ref, plat, policy)
            if not plat.matches(img.platform):
                raise BuildError(f"{ref}: the image is for {img.platform}, not for {plat}",
                                 hint=f"pull the {plat} image: rootless pull --platform {plat} {ref}")
            self._images[k] = img
        return img

    def _pinned_image(self, ref: str, plat: Platform, policy: str, tries: int = 3):
        """The image (pulled by ``policy``) with its layers and their blobs pinned by name for the
        rest of the build: an rmi or image prune from now on leaves them. One that lost content
        between the look-up and the pins (removed meanwhile) is looked up, or pulled, again."""
        for _ in range(tries):
            img = self.store.ensure_image(ref, pull=policy, platform=plat, reporter=self.reporter)
            present = [self.store.reserve_layer(self._pins, d) for d in img.layers]
            present += [self.store.reserve_blob(self._pins, b.digest) for b in img.blobs]
            if all(present):
                return img
        raise BuildError(f"{ref}: the image's layers were removed while the build started",
                         hint=f"another rootless process removed them (rmi/prune); pull {ref} and build again")

    def _build_platform(self, df: Dockerfile, plat: Platform, opts: BuildOptions, warnings: list[str],
                        multi: bool) -> StageResult:
        graph = P.stage_graph(df, self._plan_options(plat, opts))
        results: dict[int, StageResult] = {}
        self._stage_results = results
        plans: list[P.StagePlan] = []
        n = len(graph.order)
        for pos, i in enumerate(graph.order, 1):
            node = graph.node(i)
            # Podman's numbering: [stage n/N] STEP k/K, K = FROM + the stage's instructions (+ ONBUILD triggers)
            prefix = (f"[{plat}] " if multi else "") + (f"[{pos}/{n}] " if n > 1 else "")
            base_state, layers, history, key, base_time = self._stage_base(graph, node, results, opts)
            sp = P.dispatch_stage(graph, i, base_state)
            plans.append(sp)
            total = 1 + len(sp.entries)
            counter = [1]
            self.reporter.info(f"{prefix}STEP 1/{total}: {node.stage.source}")
            res = self._run_stage(graph, node, sp, layers, history, key, opts, prefix, counter, total, base_time)
            results[i] = res
        for k in P.unused_build_args(graph, plans):
            msg = f"one or more build-args [{k}] were not consumed"
            if msg not in warnings:
                warnings.append(msg)
                self.reporter.warn(msg)
        return results[graph.target]

    def _stage_base(self, graph, node: P.StageNode, results, opts):
        plat = node.platform
        if node.base.kind == "scratch":
            return P.scratch_base(), [], [], base_key("scratch", "", str(plat)), 0.0
        if node.base.kind == "stage":
            r = results[node.base.stage]
            return P.base_from_stage(r.plan), list(r.layers), list(r.history), r.key, r.time
        policy = "always" if opts.pull == "always" else opts.pull
        try:
            img = self._image(node.base.ref, plat, policy)
        except BuildError:
            raise
        except RootlessError as e:
            raise BuildError(f"{self.where(graph, node.stage)}: {e.message}", hint=e.hint) from None
        cfg = RunConfig.from_json(img.config.to_json())
        layers = [Layer(d, self._oci_blob(b.to_json())) for d, b in zip(img.layers, img.blobs)]
        history = [h.to_json() for h in img.history]
        return (P.BaseState(cfg, None, img.author), layers, history,
                base_key("image", img.id, str(plat)), _parse_time(img.created))

    @staticmethod
    def _oci_blob(d: dict) -> dict:
        d = dict(d)
        d["mediaType"] = OCI_LAYER_TYPES.get(d.get("mediaType", ""), d.get("mediaType", ""))
        d.pop("platform", None)
        return d

    # ------------------------------------------------------------------
    def _run_stage(self, graph, node, sp: P.StagePlan, layers: list[Layer], history: list[dict], key: str,
                   opts: BuildOptions, prefix: str, counter, total, base_time: float) -> StageResult:
        plat = node.platform
        stage_time = base_time
        new_history: list[dict] = []
        for entry in sp.entries:
            step = entry.step
            counter[0] += 1
            self.reporter.info(f"{prefix}STEP {counter[0]}/{total}: {entry.source or entry.created_by}")
            if step is None:
                if entry.history:
                    new_history.append({"created_by": entry.created_by, "comment": P.HISTORY_COMMENT,
                                        "empty_layer": True})
                continue
            inputs = self._inputs(graph, step, opts, plat)
            key = step_key(key, step, str(plat), inputs)
            hit = None if opts.no_cache else self.cache.get(key, self._pins)
            if hit is not None:
                self.reporter.info(f"--> Using cache {key[:12]}")
                info = hit
                self.cached_steps += 1
            else:
                info = self._execute(graph, node, step, layers, opts)
                self.cache.put(key, info)
                self.executed_steps += 1
            stage_time = max(stage_time, info.created)
            h = {"created_by": entry.created_by, "comment": P.HISTORY_COMMENT}
            if info.empty:
                h["empty_layer"] = True
            else:
                # pinned already: a hit by cache.get, a new layer by its snapshot (before it was visible)
                layers.append(Layer(info.diff_id, info.blob))
                if hit is None:
                    self.reporter.info(f"--> {info.diff_id[7:19]}")
            new_history.append(h)
        created = rfc3339(stage_time)
        for h in new_history:
            history.append({"created": created, **h})
        return StageResult(node.index, plat, layers, history, sp, key, created, stage_time)

    def _inputs(self, graph, step, opts: BuildOptions, plat: Platform) -> str:
        """What a step reads besides its parent layer, as a digest (part of its cache key): a COPY/ADD's
        sources; a RUN's bind mounts and network mode."""
        if isinstance(step, P.RunStep):
            return self._run_inputs(graph, step, opts)
        if not isinstance(step, P.CopyStep):
            return ""
        if step.from_ is None:
            local = [s for s in step.sources if not s.startswith(("http://", "https://"))]
            remote = [s for s in step.sources if s.startswith(("http://", "https://"))]
            parts = []
            if local:
                from rootless.build.fscopy import CopyError

                exclude = self._exclude(step)
                try:
                    parts.append(content_digest(self._context_fs(opts), local, self.hasher, exclude))
                except CopyError as e:
                    raise self._step_error(graph, step, e) from None
            for url in remote:
                parts.append(self._download(url, step, graph).digest)
            return ":".join(parts)
        if step.from_.kind == "stage":
            return "stage:" + self._stage_results[step.from_.stage].key
        return "image:" + self.step_image(graph, step, step.from_.ref, opts).id

    def _run_inputs(self, graph, step: P.RunStep, opts: BuildOptions) -> str:
        """A RUN's key beyond the step itself: the network it gets (``build --network`` when the RUN
        names none) and the content of each bind mount's source, as BuildKit: the files of the
        context path, the key of the stage, the ID of the image. A cache or tmpfs mount adds only its
        options (in the step), never its content. "" when there is nothing (the key of a plain RUN)."""
        parts: list = []
        if opts.network and not step.network:
            parts.append(["network", opts.network])
        for m in step.mounts:
            if m.type == "bind":
                parts.append(["bind", m.target, self._bind_digest(graph, step, m, opts)])
        return json.dumps(parts, separators=(",", ":")) if parts else ""

    def _bind_digest(self, graph, step: P.RunStep, m, opts: BuildOptions) -> str:
        from rootless.build.cachekey import tree_digest
        from rootless.build.fscopy import CopyError, root_path

        if m.from_:
            src = graph.from_source(m.from_)
            if src.kind == "stage":
                return "stage:" + self._stage_results[src.stage].key
            return "image:" + self.step_image(graph, step, src.ref, opts).id
        fs = self._context_fs(opts)
        try:
            rel = root_path(fs, m.source or "/")
            if rel and fs.lstat(rel) is None:
                if not opts.has_context:
                    from rootless.build.fscopy import NO_CONTEXT_HINT

                    raise CopyError(f"RUN --mount=type=bind: {m.source!r}: there is no build context when the "
                                    f"Dockerfile comes from stdin", hint=NO_CONTEXT_HINT)
                raise CopyError(f"RUN --mount=type=bind: {m.source!r} is not in the build context",
                                hint=f"the source is relative to the build context {opts.context}")
            return "context:" + tree_digest(fs, rel, self.hasher)
        except CopyError as e:
            raise self._step_error(graph, step, e) from None

    def step_image(self, graph, step, ref: str, opts: BuildOptions):
        """The image a COPY --from / RUN --mount from= reads; a failure names the Dockerfile line."""
        try:
            return self._image(ref, graph.options.target_platform, opts.pull)
        except RootlessError as e:
            raise self._step_error(graph, step, e) from None

    def _exclude(self, step):
        if not step.exclude:
            return None
        from rootless.build.dockerignore import PatternMatcher

        return PatternMatcher(list(step.exclude))

    def where(self, graph, step) -> str:
        """How an error names a step (or a stage's FROM): ``FILE:LINE: INSTRUCTION``, after
        ``[PLATFORM]`` when the build makes several platforms."""
        plat = f"[{graph.options.target_platform}] " if self._multi else ""
        return f"{plat}{graph.dockerfile.filename}:{step.line}: {step.source}"

    def _step_error(self, graph, step, e: RootlessError) -> BuildError:
        return StepFailed(f"{self.where(graph, step)}: {e.message}", hint=e.hint)

    # ------------------------------------------------------------------
    def _execute(self, graph, node, step, layers: list[Layer], opts: BuildOptions) -> CacheEntry:
        if isinstance(step, P.RunStep):
            from rootless.build.runstep import run_step

            info = run_step(self, graph, node, step, layers, opts)
        else:
            info = self._file_step(graph, node, step, layers, opts)
        now = time.time()
        if info.empty:
            return CacheEntry("", None, True, now)
        blob = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": info.digest,
                "size": info.size}
        return CacheEntry(info.diff_id, blob, False, now)

    def lower_dirs(self, layers: list[Layer]) -> list[str]:
        return [str(self.store.layer_path(l.diff_id) / "diff") for l in layers]

    def _file_step(self, graph, node, step, layers: list[Layer], opts: BuildOptions):
        """COPY / ADD / WORKDIR: in the user namespace, on an overlay of the stage's layers."""
        from rootless.build import filestep
        from rootless.image.locks import Staging
        from rootless.userns import run_in_userns

        job = filestep.FileJob(
            lowers=tuple(self.lower_dirs(layers)), layers_dir=str(self.store.root / "layers"),
            step=step, source=self._copy_source(graph, step, opts), store_root=str(self.store.root))
        staging = Staging(self.store.root / "tmp")
        try:
            return run_in_userns(filestep.run_file_job, self.store, job, str(staging.path), pins=self._pins)
        except RootlessError as e:
            raise self._step_error(graph, step, e) from None
        finally:
            staging.close()
            self.store.remove_trees([staging.path])

    def _copy_source(self, graph, step, opts: BuildOptions):
        from rootless.build import filestep

        if not isinstance(step, P.CopyStep):
            return None
        if step.from_ is None:
            downloads = {}
            for s in step.sources:
                if s.startswith(("http://", "https://")):
                    downloads[s] = self._download(s, step, graph)
            cfs = self._context_fs(opts)
            return filestep.Source("context", root=str(opts.context), entries=cfs.stats,
                                   unreadable=tuple(cfs.unreadable), downloads=downloads)
        if step.from_.kind == "stage":
            r = self._stage_results[step.from_.stage]
            return filestep.Source("layers", lowers=tuple(self.lower_dirs(r.layers)),
                                   label=f"stage {graph.node(step.from_.stage).display}")
        img = self.step_image(graph, step, step.from_.ref, opts)
        return filestep.Source("layers", lowers=tuple(str(p) for p in self.store.layer_dirs(img)),
                               label=f"image {step.from_.ref}")

    def _download(self, url: str, step, graph):
        from rootless.build import filestep

        cache = getattr(self, "_downloads", None)
        if cache is None:
            cache = self._downloads = {}
        if url not in cache:
            try:
                cache[url] = filestep.download(url, self.store.root / "tmp", step.checksum, self.reporter)
            except RootlessError as e:
                raise self._step_error(graph, step, e) from None
        return cache[url]

    # ------------------------------------------------------------------
    def _commit(self, results: list[StageResult], opts: BuildOptions, warnings: list[str]) -> BuildResult:
        from rootless.image import oci
        from rootless.image.pull import PlatformImage, commit
        from rootless.image.reference import parse

        refs = [parse(t) for t in opts.tags]
        images: list[PlatformImage] = []
        out: list[PlatformResult] = []
        for r in results:
            cfg = self._config_json(r)
            cbytes = json.dumps(cfg, separators=(",", ":")).encode()
            cdigest = oci.sha256_digest(cbytes)
            self.store.reserve_blob(self._pins, cdigest)   # pinned before it is visible (GC keeps it)
            self.store.write_blob(cbytes, cdigest)
            man = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                   "config": {"mediaType": oci.OCI_CONFIG, "digest": cdigest, "size": len(cbytes)},
                   "layers": [l.blob for l in r.layers]}
            mbytes = json.dumps(man, separators=(",", ":")).encode()
            mdigest = oci.sha256_digest(mbytes)
            self.store.reserve_blob(self._pins, mdigest)
            self.store.write_blob(mbytes, mdigest)
            pm = oci.parse_manifest(mbytes)
            images.append(PlatformImage(mbytes, pm, mdigest, oci.OCI_MANIFEST, oci.ConfigFile.from_bytes(cbytes),
                                        cdigest))
            out.append(PlatformResult(r.platform, cdigest, mdigest, mbytes, cbytes))
        index_desc = None
        index_digest = ""
        if len(images) > 1:
            doc = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
                   "manifests": [{"mediaType": oci.OCI_MANIFEST, "digest": p.manifest_digest,
                                  "size": len(p.manifest_bytes), "platform": p.platform.to_json()} for p in out]}
            ibytes = json.dumps(doc, separators=(",", ":")).encode()
            index_digest = oci.sha256_digest(ibytes)
            self.store.reserve_blob(self._pins, index_digest)
            self.store.write_blob(ibytes, index_digest)
            index_desc = oci.Descriptor(oci.OCI_INDEX, index_digest, len(ibytes))
        if refs:
            from rootless.image.store import platform_key

            built = {platform_key(p.platform) for p in out}
            for ref in refs:
                commit(self.store, ref, images, index_desc, repo_digest=None)
                if len(images) > 1:
                    # the tag is this manifest list now: no platform of an older image stays under it
                    def prune(db, key=ref.tagged):
                        plats = db["tags"].get(key, {})
                        for k in [k for k in plats if k not in built]:
                            del plats[k]

                    self.store.update(prune)
        else:
            commit(self.store, None, images, None, repo_digest=None)
        return BuildResult(out, index_digest, tuple(r.familiar for r in refs), warnings)

    def _config_json(self, r: StageResult) -> dict:
        p = r.platform
        d: dict = {"created": r.created or rfc3339()}
        if r.plan.author:
            d["author"] = r.plan.author
        d["architecture"] = p.architecture
        if p.variant:
            d["variant"] = p.variant
        d["os"] = p.os
        d["config"] = r.plan.config.to_json()
        d["rootfs"] = {"type": "layers", "diff_ids": [l.diff_id for l in r.layers]}
        d["history"] = r.history
        return d
