"""Picks up a changed gatewatch config, rule files and LiteLLM config (local or s3://).

Why: on ECS these files live in S3 and get edited while tasks run; restarting every task
for a threshold change is what users want to avoid. Checks are cheap by design, so they
can run every minute on every task: an S3 object is fetched with If-None-Match (a 304
without a body when unchanged), a rule folder with one LIST whose ETags say whether any
file changed, a local file by `stat`. SIGHUP (and anything else that calls
`app.reload_handler`) re-reads all three at once, whatever their versions.

A broken new version never replaces a working one: it is logged with its file, key path
and reason, counted in `gatewatch_config_reloads_total{source,outcome="error"}`, and
`gatewatch_config_last_reload_successful{source}` stays 0 until a good version arrives.
The broken version is remembered, so it is not downloaded and refused again every interval.

Contract with `app.reload_hooks`: each hook re-reads whatever files it owns (the rule
engine re-reads its rule files on every call, changed config or not) and, to refuse a bad
version, keeps its old state and raises `ConfigError`. The refresher then puts the old
config back on `app.config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.configtypes import ConfigError

if TYPE_CHECKING:
    from agent.config import Config
    from agent.host import FeatureHost

log = logging.getLogger(__name__)

SOURCE_CONFIG = "config"
SOURCE_RULES = "rules"
SOURCE_CATALOG = "litellm_config"
SOURCES = (SOURCE_CONFIG, SOURCE_RULES, SOURCE_CATALOG)
RULE_SUFFIXES = (".yml", ".yaml")

T = TypeVar("T")


@dataclass(frozen=True)
class Fetched:
    text: str
    version: str
    digest: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_version(path: Path) -> str:
    st = path.stat()
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class WatchedObject:
    """One config-like object (local file or s3:// key): the version last seen and the
    digest of the content the running app uses."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.version: str | None = None  # ETag (s3) or inode:size:mtime_ns (file) seen by the last poll
        self.digest: str | None = None  # sha256 of the content in use

    def poll(self, force: bool = False) -> Fetched | None:
        """Blocking (run in an executor). The current content, or None when unchanged."""
        from agent.config import read_text

        if self.location.startswith("s3://"):
            from agent.s3 import read_s3_object

            obj = read_s3_object(self.location, if_none_match=None if force else self.version)
            if obj is None:
                return None
            version, text = obj.etag, obj.text
        else:
            try:
                version = _file_version(Path(self.location))
            except FileNotFoundError:
                raise ConfigError("", "file not found", self.location) from None
            except OSError as exc:
                raise ConfigError("", f"cannot read: {exc.strerror}", self.location) from None
            if version == self.version and not force:
                return None
            text = read_text(self.location)
        self.version = version
        return Fetched(text, version, _digest(text))


def rules_fingerprint(locations: list[str]) -> tuple[tuple[str, str], ...]:
    """Blocking. (file, version) of every rule file the `rules:` entries name.

    Rule *content* is the rule engine's business: this only says whether anything changed,
    with one LIST per s3:// entry and a stat per local file.
    """
    from agent.s3 import list_s3_objects

    entries: list[tuple[str, str]] = []
    for location in locations:
        if location.startswith("s3://"):
            found = list_s3_objects(location, RULE_SUFFIXES)
            entries.extend(found if found else [(location, "missing")])
            continue
        path = Path(location)
        if any(ch in location for ch in "*?["):  # the same expansion as the rule loader's
            files = sorted(Path(p) for p in glob.glob(location) if p.endswith(RULE_SUFFIXES) and os.path.isfile(p))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in RULE_SUFFIXES and p.is_file())
        else:
            files = [path]
        for file in files:
            try:
                entries.append((str(file), _file_version(file)))
            except OSError:
                entries.append((str(file), "missing"))
    return tuple(entries)


class RefreshMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter(
            "gatewatch_config_reloads",
            "Reloads of the gatewatch config, rule files and LiteLLM config by source and outcome "
            "(error = the new version was refused and the old one kept).",
            ["source", "outcome"],
            registry=registry,
        )
        self.checks = Counter(
            "gatewatch_config_checks",
            "Change checks by source and result (unchanged = an ETag / stat match, nothing downloaded).",
            ["source", "result"],
            registry=registry,
        )
        self.last_successful = Gauge(
            "gatewatch_config_last_reload_successful",
            "1 when the last reload attempt of this source succeeded, 0 when its newest version was refused.",
            ["source"],
            registry=registry,
        )
        self.last_success_time = Gauge(
            "gatewatch_config_last_reload_success_timestamp_seconds",
            "When this source was last loaded successfully (start counts).",
            ["source"],
            registry=registry,
        )
        now = time.time()
        for source in SOURCES:
            self.last_successful.labels(source).set(1)
            self.last_success_time.labels(source).set(now)
            for outcome in ("ok", "error"):
                self.reloads.labels(source, outcome)

    def ok(self, source: str) -> None:
        self.reloads.labels(source, "ok").inc()
        self.last_successful.labels(source).set(1)
        self.last_success_time.labels(source).set(time.time())

    def refused(self, source: str) -> None:
        self.reloads.labels(source, "error").inc()
        self.last_successful.labels(source).set(0)


class Refresher:
    """A component: checks config, rules and the LiteLLM config on their intervals."""

    name = "refresh"

    def __init__(self, app: FeatureHost) -> None:
        self.app = app
        self.metrics = RefreshMetrics(app.registry)
        self._config: WatchedObject | None = None
        self._catalog: WatchedObject | None = None
        self._rules: tuple[tuple[str, str], ...] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_check_error: dict[str, str] = {}
        self._baselined = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gatewatch-refresh")

    async def stop(self, deadline: float) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_baselined(self) -> None:
        """For tests and `reload_now`: the versions in use are known."""
        await self._baselined.wait()

    def _intervals(self) -> dict[str, float]:
        cfg = self.app.config
        refresh = getattr(cfg, "refresh", None)
        return {SOURCE_CONFIG: float(refresh.interval) if refresh else 0.0,
                SOURCE_CATALOG: float(cfg.litellm.config_refresh)}

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self._lock:
                await self._baseline()
        except Exception:  # checks still run; each compares with what it can read then
            log.exception("reading the versions in use failed")
        finally:
            self._baselined.set()
        last = dict.fromkeys((SOURCE_CONFIG, SOURCE_CATALOG), loop.time())
        while True:
            intervals = {k: v for k, v in self._intervals().items() if v > 0}
            if not intervals:
                await asyncio.sleep(1.0)  # off; a reload may turn it on
                continue
            due = {k: last[k] + v for k, v in intervals.items()}
            # wake at least every 5 s, so a reload that shortens an interval takes effect soon
            await asyncio.sleep(min(5.0, max(0.0, min(due.values()) - loop.time())))
            for source, when in due.items():
                if when > loop.time():
                    continue
                try:
                    async with self._lock:
                        if source == SOURCE_CONFIG:
                            await self._check_config()
                            await self._check_rules()
                        else:
                            await self._check_catalog()
                except Exception:  # the loop must survive anything a check does
                    log.exception("refresh check of %s failed", source)
                last[source] = loop.time()

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _baseline(self) -> None:
        """Remember the versions in use, so the first periodic check has something to compare."""
        cfg = self.app.config
        if cfg.source_file:
            self._config = WatchedObject(cfg.source_file)
            fetched = await self._poll(SOURCE_CONFIG, self._config, force=True)
            if fetched is not None:
                # A change between the CLI's load and this read (milliseconds) waits for the next
                # change or a SIGHUP: comparing with app.config would misfire where code adjusted it.
                self._config.digest = fetched.digest
        self._rules = await self._rules_now()
        location = cfg.litellm.config
        if location:
            self._catalog = WatchedObject(location)
            fetched = await self._poll(SOURCE_CATALOG, self._catalog, force=True)
            if fetched is not None:
                self._catalog.digest = fetched.digest

    # -- checks -----------------------------------------------------------------------
    async def _poll(self, source: str, watched: WatchedObject, force: bool = False) -> Fetched | None:
        try:
            fetched = await self._io(watched.poll, force)
        except ConfigError as exc:
            self._check_failed(source, exc)
            return None
        self._last_check_error.pop(source, None)
        if not force:  # a forced read (start, SIGHUP) is not a check
            self.metrics.checks.labels(source, "unchanged" if fetched is None else "changed").inc()
        return fetched

    def _check_failed(self, source: str, exc: Exception) -> None:
        self.metrics.checks.labels(source, "error").inc()
        message = str(exc)
        if self._last_check_error.get(source) != message:  # once per distinct problem, not every interval
            log.warning("cannot check %s for changes (keeping the running version): %s", source, message)
            self._last_check_error[source] = message

    async def _check_config(self, force: bool = False) -> None:
        cfg = self.app.config
        if not cfg.source_file:
            return
        if self._config is None or self._config.location != cfg.source_file:
            self._config = WatchedObject(cfg.source_file)
            force = True
        fetched = await self._poll(SOURCE_CONFIG, self._config, force)
        if fetched is None:
            return
        if fetched.digest == self._config.digest and not force:
            self.metrics.last_successful.labels(SOURCE_CONFIG).set(1)  # back to the version in use
            return
        await self._apply_config_text(fetched, only_if_different=not force)

    async def _apply_config_text(self, fetched: Fetched, only_if_different: bool) -> None:
        from agent.config import load_yaml_text, parse_config

        assert self._config is not None
        location = self._config.location
        try:
            new = parse_config(load_yaml_text(fetched.text, location), location)
        except ConfigError as exc:
            self.metrics.refused(SOURCE_CONFIG)
            log.error("config reload refused, keeping the running config: %s", exc)
            return
        if only_if_different and new == self.app.config:
            self._config.digest = fetched.digest  # comments or formatting only
            self.metrics.last_successful.labels(SOURCE_CONFIG).set(1)
            return
        if await self._reload(new, SOURCE_CONFIG):
            self._config.digest = fetched.digest
            self._rules = await self._rules_now()  # the hooks re-read the rule files just now
            log.info("config reloaded from %s", location)

    async def _reload(self, new: Config, source: str) -> bool:
        """Run the reload hooks; a hook's ConfigError puts the old config back."""
        from agent.redact import register_config_secrets

        register_config_secrets(new)
        old = self.app.config
        try:
            await self.app.reload(new)
        except ConfigError as exc:
            self.app.config = old
            self.metrics.refused(source)
            log.error("%s reload refused, keeping the running version: %s", source, exc)
            return False
        except Exception:
            self.app.config = old
            self.metrics.refused(source)
            log.exception("%s reload failed, keeping the running version", source)
            return False
        engine = self.app.rule_engine  # agent/rules: logs a refusal instead of raising
        status = getattr(engine, "last_reload", None)
        if status is not None and status.ok is False:
            self.metrics.refused(SOURCE_RULES)
            if source == SOURCE_RULES:
                return False
        elif source == SOURCE_CONFIG and engine is not None:
            self.metrics.last_successful.labels(SOURCE_RULES).set(1)
        self.metrics.ok(source)
        return True

    async def _rules_now(self) -> tuple[tuple[str, str], ...] | None:
        """The rule files' versions now; None when they cannot be listed (counted and logged)."""
        locations = self.app.config.rules
        if not locations:
            return None
        try:
            fingerprint = await self._io(rules_fingerprint, list(locations))
        except ConfigError as exc:
            self._check_failed(SOURCE_RULES, exc)
            return None
        self._last_check_error.pop(SOURCE_RULES, None)
        return fingerprint

    async def _check_rules(self) -> None:
        if not self.app.config.rules:
            self._rules = None
            return
        fingerprint = await self._rules_now()
        if fingerprint is None:
            return
        if fingerprint == self._rules:
            self.metrics.checks.labels(SOURCE_RULES, "unchanged").inc()
            return
        self.metrics.checks.labels(SOURCE_RULES, "changed").inc()
        before, self._rules = self._rules, fingerprint  # a refused version is not retried until it changes
        changed = sorted({f for f, _ in set(fingerprint) ^ set(before or ())})
        log.info("rule files changed (%s), reloading", ", ".join(changed) or "unknown before")
        if await self._reload(self.app.config, SOURCE_RULES):
            log.info("rules reloaded")

    async def _check_catalog(self, force: bool = False) -> None:
        from agent.enrich import catalog_from_config_text

        location = self.app.config.litellm.config
        if not location:
            self._catalog = None
            return
        if self._catalog is None or self._catalog.location != location:
            self._catalog = WatchedObject(location)
            force = True
        fetched = await self._poll(SOURCE_CATALOG, self._catalog, force)
        if fetched is None:
            return
        if fetched.digest == self._catalog.digest and not force:
            self.metrics.last_successful.labels(SOURCE_CATALOG).set(1)
            return
        kind = "s3" if location.startswith("s3://") else "file"
        app = self.app
        try:
            loaded = catalog_from_config_text(fetched.text, app.catalog.fallback, location)
        except ConfigError as exc:
            app.metrics.catalog_reloads.labels(kind, "error").inc()
            self.metrics.refused(SOURCE_CATALOG)
            log.error("LiteLLM config reload refused, keeping the running catalog: %s", exc)
            return
        before = len(app.catalog)
        app.catalog.replace(loaded)
        app.enricher.invalidate()
        app.metrics.catalog_deployments.set(len(app.catalog))
        app.metrics.catalog_reloads.labels(kind, "ok").inc()
        self.metrics.ok(SOURCE_CATALOG)
        self._catalog.digest = fetched.digest
        log.info("deployment catalog reloaded from %s: %d deployments (was %d)", location, len(app.catalog), before)

    # -- on demand (SIGHUP) -------------------------------------------------------------
    async def reload_now(self) -> None:
        """Re-read config, rules and LiteLLM config now, whatever their versions say."""
        await self.wait_baselined()
        async with self._lock:
            if self.app.config.source_file:
                await self._check_config(force=True)
            else:
                await self._reload(self.app.config, SOURCE_CONFIG)  # embedded defaults: rules still re-read
            self._rules = await self._rules_now()  # the hooks just re-read the rule files
            await self._check_catalog(force=True)


def install(app: FeatureHost) -> None:
    """Always on: periodic checks follow `refresh.interval` / `litellm.config_refresh` (0 = off)."""
    refresher = Refresher(app)
    app.add_component(refresher)
    app.reload_handler = refresher.reload_now
    app.refresher = refresher
