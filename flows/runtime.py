"""Runtime shared by every flow: Prefect environment, config loading, stage caching,
retry policy and run logs.

Prefect reads its settings when it is first imported, so :func:`prefect_env` must run
before ``import prefect`` (the CLI and the tests' conftest call it first). With no
PREFECT_API_URL, Prefect 3 starts a temporary local server per process whose database
lives under ``<data_root>/prefect``; with PREFECT_API_URL set, flows run against that
server.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from relgrade.config import RelgradeConfig, load_config
from relgrade.util import utc_now, write_json_atomic


def prefect_env(cfg: RelgradeConfig) -> None:
    """Point Prefect at the data root (no-op for variables the user already set)."""
    home = cfg.paths.prefect_home
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(home / "storage"))
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def get_config(profile: str | None, overrides: dict[str, Any] | None = None) -> RelgradeConfig:
    cfg = load_config(profile, overrides=overrides)
    prefect_env(cfg)
    return cfg


def log_to_file(cfg: RelgradeConfig, name: str) -> Path:
    """Also write relgrade's and Prefect's log lines to <data_root>/logs/<name>-<utc>.log."""
    cfg.paths.logs.mkdir(parents=True, exist_ok=True)
    path = cfg.paths.logs / f"{name}-{utc_now():%Y%m%dT%H%M%SZ}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for logger in ("relgrade", "flows", "validation", "training", "prefect"):
        lg = logging.getLogger(logger)
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    return path


def is_data_error(exc: BaseException) -> bool:
    """Bad input never gets better by retrying."""
    from relgrade.contract import ContractError
    from validation.gate import ValidationFailed

    return isinstance(exc, (ContractError, ValidationFailed))


# --------------------------------------------------------------------------- bad input on the terminal
def input_error_types() -> tuple[type[BaseException], ...]:
    """relgrade's own refusals of what a user gives it: the data contract, the
    configuration and the validation gate."""
    from relgrade.config import ConfigError
    from relgrade.contract import ContractError
    from validation.gate import ValidationFailed

    return (ContractError, ConfigError, ValidationFailed)


def input_error_of(exc: BaseException | None) -> BaseException | None:
    """The input error ``exc`` is or wraps (through ``__cause__``, ``__context__`` and a
    Ray task error's ``cause``), else None."""
    types, seen = input_error_types(), set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, types):
            return exc
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)
    return None


def _input_error_names() -> set[str]:
    names, stack = set(), list(input_error_types())
    while stack:
        t = stack.pop()
        names.add(t.__name__)
        stack += t.__subclasses__()
    return names


class QuietInputErrors(logging.Filter):
    """A terminal handler's filter: drops Prefect's reports of a task or flow run that
    failed on an input error (its traceback, and the "Finished in state Failed(...)" line
    that names the error) and the gate's report of a refused batch (the refusal repeats
    it), so the command's own short message is what the user reads.
    Every other record passes; the run log (a file handler) keeps them all."""

    _STATE = re.compile(r"encountered an exception:? (?:[\w.]+\.)?(\w+):")

    def __init__(self) -> None:
        super().__init__()
        self.names = _input_error_names()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        drop = input_error_of(exc) is not None
        if not drop and record.name.startswith("prefect"):
            m = self._STATE.search(record.getMessage())
            drop = bool(m and m.group(1) in self.names)
        if not drop and record.name == "validation.gate":
            # a refused batch: the command's refusal prints the same report, once
            drop = record.getMessage().startswith("validation FAILED")
        self.dropped += drop
        return not drop


def terminal_handlers() -> list[logging.Handler]:
    """The handlers that write to the terminal: stream handlers (not files) of the root
    logger and of Prefect's loggers; pytest's capture handlers are left alone."""
    out = []
    for name in (None, "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for h in logging.getLogger(name).handlers:
            if (isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                    and not type(h).__module__.startswith("_pytest") and h not in out):
                out.append(h)
    return out


@contextmanager
def quiet_input_errors(enabled: bool = True):
    """While it runs, :class:`QuietInputErrors` filters the terminal's handlers (yields
    the filter; ``enabled`` False, for --debug, leaves everything on the terminal)."""
    f = QuietInputErrors()
    handlers = terminal_handlers() if enabled else []
    for h in handlers:
        h.addFilter(f)
    try:
        yield f
    finally:
        for h in handlers:
            h.removeFilter(f)


def retry_io_only(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: retry transient I/O errors, never bad data (nor a run
    stopped on purpose)."""
    from relgrade.grading.stage import StopAfter

    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify it
        return not (is_data_error(exc) or isinstance(exc, StopAfter))
    return True


def io_task(task_fn, cfg: RelgradeConfig):
    """``task_fn`` with the configured retries (``prefect.task_retries``, ``..._delay_seconds``)
    for transient I/O errors; bad data and a deliberate stop are never retried."""
    p = cfg.prefect
    return task_fn.with_options(retries=p.task_retries, retry_delay_seconds=p.task_retry_delay_seconds,
                                retry_condition_fn=retry_io_only)


def stage_key(stage: str, cfg: RelgradeConfig, sections: Iterable[str], inputs: Iterable[Path],
              outputs: Iterable[Path] = ()) -> str:
    """Cache key for a stage: its config sections, its input files' content, the code
    version and the numeric path (device, resolved precisions: relgrade/numerics.py). Outputs are not part of the key: start the task through :func:`cached`,
    which recomputes (and refreshes the stored result) while any output is missing."""
    h = hashlib.sha256(stage.encode())
    h.update(str(cfg.paths.root).encode())
    for s in sections:
        h.update(json.dumps(getattr(cfg, s).model_dump(mode="json"), sort_keys=True).encode())
    from relgrade.io import file_digest

    for p in inputs:
        p = Path(p)
        h.update(p.name.encode())
        h.update(file_digest(p).encode() if p.exists() else b"missing")
    h.update(_code_version().encode())
    from relgrade.numerics import numerics_key

    h.update(numerics_key(cfg).encode())  # a cached stage is never reused across devices or precisions
    return h.hexdigest()


def cached(task_fn, outputs: Iterable[Path]):
    """``task_fn`` as is while every output exists (a rerun with the same key returns the
    stored result and skips the work), else with ``refresh_cache=True`` so a deleted
    output is rebuilt and the stored result replaced. The first run stores its result
    too, so the second run already skips."""
    missing = [p for p in outputs if not Path(p).exists()]
    return task_fn.with_options(refresh_cache=True) if missing else task_fn


def _code_version() -> str:
    """Digest of the package sources: changing code invalidates cached stages."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pkg in ("relgrade", "flows", "validation", "training"):
        for p in sorted((root / pkg).rglob("*.py")):
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


MANIFEST = "manifest.json"


def read_stage_manifest(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_stage_manifest(path: Path, manifest: dict, cfg: RelgradeConfig | None = None) -> None:
    """Write a stage's manifest; with ``cfg``, the run's numeric path goes in with it."""
    if cfg is not None and "numerics" not in manifest:
        from relgrade.numerics import numerics

        manifest = {**manifest, "numerics": numerics(cfg)}
    write_json_atomic(path, manifest)


# --------------------------------------------------------------------------- stage skeleton
def view_digests(cfg: RelgradeConfig, views: Iterable[str]) -> dict[str, str | None]:
    """Content digest of each view's offline table (None when it has none)."""
    from relgrade.io import file_digest

    return {v: file_digest(cfg.paths.feature_source(v)) if cfg.paths.feature_source(v).exists() else None
            for v in views}


def stage_done(manifest: Path, key: str, outputs: Iterable[Path], cfg: RelgradeConfig | None = None,
               views: Iterable[str] = ()) -> dict | None:
    """The stage's manifest when it records ``key`` and every output exists (a rerun with
    the same inputs, config and code skips the stage); else None.

    ``views``: feature views this stage writes last (their keys are final once it ran).
    If any of them changed since the stage published it (another stage re-wrote the
    keys), the stage runs again, so the store never goes back to an earlier writer's
    values."""
    doc = read_stage_manifest(manifest)
    views = list(views)
    if views and doc and cfg is not None and doc.get("view_digests") != view_digests(cfg, views):
        logging.getLogger("flows").info("%s: a view it publishes was re-written since: running again",
                                        doc.get("stage", manifest.parent.name))
        return None
    if doc and doc.get("stage_key") == key and all(Path(p).exists() for p in outputs):
        logging.getLogger("flows").info("%s: inputs, config and code unchanged since %s: skipped",
                                        doc.get("stage", manifest.parent.name), doc.get("finished_at", "the last run"))
        return doc
    return None


def finish_stage(manifest: Path, summary: dict, key: str, cfg: RelgradeConfig | None = None,
                 views: Iterable[str] = ()) -> dict:
    """Write the stage's manifest (its summary, the key a rerun compares with, the
    digests of the views it writes last)."""

    extra = {"view_digests": view_digests(cfg, views)} if cfg is not None and views else {}
    doc = json.loads(json.dumps({**summary, **extra, "stage_key": key, "finished_at": utc_now().isoformat()},
                                default=str))
    write_stage_manifest(manifest, doc, cfg)
    return doc


def md_table(rows: list[dict], cols: list[str] | None = None, digits: int = 4) -> str:
    """A markdown table of ``rows`` (numbers rounded, ``|`` escaped)."""
    if not rows:
        return ""
    cols = cols or list(rows[0])

    def cell(v):
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return "-" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows])


def stage_artifacts(stage: str, table: list[dict], report: dict | None = None, markdown: str = "") -> None:
    """Two Prefect artifacts of a stage's flow run: ``<stage>-metrics`` (a table of its key
    metrics) and ``<stage>-report`` (markdown: the same figures, ``markdown`` the stage
    adds, and where its HTML report is; a ``file://`` link is not something the UI can
    open, so the path is given as text)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(table=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in table],
                          key=f"{stage}-metrics", description=f"relgrade {stage}: key metrics")
    lines = [f"# relgrade {stage}", "", md_table(table), "", markdown]
    if report:
        lines += ["", f"HTML report: `{report.get('html')}` (open it in a browser on this machine)",
                  f"JSON: `{report.get('json')}`"]
    create_markdown_artifact(markdown="\n".join(lines), key=f"{stage}-report", description=f"relgrade {stage} report")


# --------------------------------------------------------------------------- the Prefect server
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with(parent: int):
    """preexec_fn: the child gets SIGTERM when this process dies, even by SIGKILL."""
    def hook():
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return hook


def start_server(cfg: RelgradeConfig, timeout_s: float = 120.0) -> str | None:
    """A Prefect server for this run of the CLI, when no PREFECT_API_URL is set: on a free
    loopback port, its database under <data_root>/prefect, tied to this process (it gets
    SIGTERM when the CLI exits, even when the CLI is killed with SIGKILL; Prefect's own
    temporary server is orphaned then). Its pid and URL are in
    <data_root>/prefect/server.json while it runs. Returns the API URL (None when one was
    set already)."""
    import atexit
    import subprocess
    import time

    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return None  # a server is set, or Prefect already read its settings in this process
    home = cfg.paths.prefect_home
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api, "PREFECT_API_URL": api, "PREFECT_SERVER_UI_ENABLED": "false"}
    prefect = Path(sys.executable).with_name("prefect")
    cmd = [str(prefect) if prefect.exists() else sys.executable, *([] if prefect.exists() else ["-m", "prefect"]),
           "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with(os.getpid()))
    info = home / "server.json"
    info.write_text(json.dumps({"pid": proc.pid, "api_url": api, "parent": os.getpid()}))

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        info.unlink(missing_ok=True)

    atexit.register(stop)
    import urllib.request

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}: see {home / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    os.environ["PREFECT_API_URL"] = api
                    logging.getLogger("flows").info("Prefect server for this run: %s (pid %d)", api, proc.pid)
                    return api
        except OSError:
            pass
        time.sleep(0.5)
    stop()
    raise RuntimeError(f"the Prefect server did not answer within {timeout_s:.0f}s: see {home / 'server.log'}")


# --------------------------------------------------------------------------- one run per stage and data root
class StageLocked(RuntimeError):
    """Another process runs this stage on this data root."""


class stage_lock:
    """An exclusive lock per (data root, stage): a second run of the stage waits for the
    first (saying who holds it), then finds its result and skips. The lock is an
    ``flock`` on ``<data_root>/locks/<stage>.lock``: the kernel releases it when its holder
    dies, however it dies."""

    def __init__(self, cfg: RelgradeConfig, stage: str, wait_s: float | None = None):
        self.path = cfg.paths.lock(stage)
        self.stage, self.root, self.wait_s = stage, cfg.paths.root, wait_s
        self.fd = None

    def __enter__(self):
        import fcntl
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = open(self.path, "a+")
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fd.seek(0)
            holder = self.fd.read().strip() or "another process"
            msg = f"stage {self.stage} on {self.root} is running in {holder}"
            if self.wait_s == 0:
                raise StageLocked(msg + ": wait for it or stop it") from None
            logging.getLogger("flows").warning("%s: waiting for it to finish", msg)
            t0 = time.monotonic()
            while True:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if self.wait_s is not None and time.monotonic() - t0 > self.wait_s:
                        raise StageLocked(msg + f": still running after {self.wait_s:.0f}s") from None
                    time.sleep(1.0)
        self.fd.seek(0)
        self.fd.truncate()
        self.fd.write(f"pid {os.getpid()} (started {utc_now().isoformat(timespec='seconds')})")
        self.fd.flush()
        return self

    def __exit__(self, *exc):
        import fcntl

        if self.fd is not None:
            self.fd.seek(0)
            self.fd.truncate()
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.fd.close()
        return False
