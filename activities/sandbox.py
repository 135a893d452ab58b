"""Where a shell command runs: an unprivileged user, resource limits, no network, and a PID
namespace so nothing it starts outlives the call.

As root, a command runs as

    unshare --pid --fork --kill-child --mount-proc --net -- setpriv --reuid U --regid G \\
        --clear-groups -- bash -c COMMAND

with rlimits (CPU seconds, address space, file size, processes) set before the exec. The
namespace's init is the command's bash: when it exits, or when unshare is killed (timeout,
cancel, or the worker dying, through PR_SET_PDEATHSIG and --kill-child), the kernel kills every
process left in the namespace, including ones that detached with setsid, nohup or &. The new
network namespace has only a loopback that is down, so the command reaches neither the
database nor anything else.

What the kernel or the worker's user does not allow is detected once, logged as a warning, and
left out (AGENTRUN_TOOL_SANDBOX=required refuses to run commands instead). As another user than
root, the worker tries an unprivileged user namespace (`unshare --user`); without one, commands
run as the worker's user with rlimits and a process-group kill only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from agentrun.settings import Settings

log = logging.getLogger("agentrun.sandbox")

__all__ = ["Redactor", "Sandbox", "SandboxConfig", "SandboxUnavailable"]

BASE_ENV = ("PATH", "LANG", "TZ", "TERM")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MIN_SECRET_CHARS = 6


class SandboxUnavailable(RuntimeError):
    """AGENTRUN_TOOL_SANDBOX=required, and this machine cannot give the full sandbox."""


@dataclass(frozen=True)
class SandboxConfig:
    mode: Literal["auto", "required", "off"] = "auto"
    network: bool = False
    user: str = "agentrun-tool"
    cpu_s: int = 300
    memory_mb: int = 4096
    file_mb: int = 1024
    max_procs: int = 512
    env_allow: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        return cls(
            mode=settings.tool_sandbox,
            network=settings.tool_network,
            user=settings.tool_user,
            cpu_s=settings.tool_cpu_s,
            memory_mb=settings.tool_memory_mb,
            file_mb=settings.tool_file_mb,
            max_procs=settings.tool_max_procs,
            env_allow=tuple(settings.tool_env_allow),
        )


@dataclass
class _Plan:
    prefix: list[str]
    uid: int | None
    gid: int | None
    missing: list[str] = field(default_factory=list)


class Sandbox:
    """Runs commands confined; the confinement is detected once per worker process."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._plan: _Plan | None = None
        self._lock = threading.Lock()

    # -- what this machine allows ------------------------------------------------------------

    def plan(self) -> _Plan:
        """The command prefix (detected on first use: it runs a few tiny processes)."""
        with self._lock:
            if self._plan is None:
                self._plan = self._detect()
            return self._plan

    @property
    def uid(self) -> int | None:
        return self.plan().uid

    def _detect(self) -> _Plan:
        cfg = self.config
        if cfg.mode == "off":
            log.warning("AGENTRUN_TOOL_SANDBOX=off: shell commands run as the worker's user")
            return _Plan([], None, None, ["sandbox switched off"])
        unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
        root = os.geteuid() == 0
        uid = gid = None
        drop: list[str] = []
        missing: list[str] = []
        if root:
            uid, gid = _sandbox_user(cfg.user)
            if setpriv:
                drop = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
            else:
                missing.append("an unprivileged user (setpriv not found)")
                uid = gid = None
        else:
            missing.append("a user of its own (the worker is not root)")
        net = [] if cfg.network else ["--net"]
        candidates: list[tuple[list[str], list[str]]] = []
        if unshare:
            user_ns = [] if root else ["--user"]
            base = [unshare, *user_ns, "--pid", "--fork", "--kill-child"]
            candidates += [
                ([*base, "--mount-proc", *net, "--"], []),
                ([*base, *net, "--"], ["a private /proc"]),
            ]
            if net:
                candidates.append(
                    ([*base, "--"], ["a network namespace (the command can reach the network)"])
                )
        candidates.append(([], ["a PID namespace (detached commands may outlive the call)"]))
        if net and not unshare:
            candidates[-1][1].append("a network namespace (the command can reach the network)")
        for ns, lacks in candidates:
            prefix = [*ns, *drop]
            if _works([*prefix, "true"]):
                missing += lacks
                break
        else:  # pragma: no cover - `true` always runs without a prefix
            prefix, missing = [], [*missing, "every confinement"]
        if missing:
            log.warning(
                "tool sandbox lacks %s; see AGENTRUN_TOOL_SANDBOX in the README",
                "; ".join(missing),
            )
        return _Plan(prefix, uid, gid, missing)

    def check(self) -> None:
        """Raise SandboxUnavailable when the full sandbox is required and missing."""
        plan = self.plan()
        if self.config.mode == "required" and plan.missing:
            raise SandboxUnavailable(
                "the tool sandbox is required (AGENTRUN_TOOL_SANDBOX=required) but this worker "
                "lacks " + "; ".join(plan.missing)
            )

    # -- one command ---------------------------------------------------------------------------

    def argv(self, command: str) -> list[str]:
        return [*self.plan().prefix, "bash", "-c", command]

    def env(self, workspace: Path, extra: Mapping[str, str]) -> dict[str, str]:
        """An allowlisted environment: nothing of the worker's secrets, by construction."""
        env = {
            name: value
            for name, value in os.environ.items()
            if name in BASE_ENV or name.startswith("LC_") or name in self.config.env_allow
        }
        env.setdefault("PATH", DEFAULT_PATH)
        env["HOME"] = str(workspace)
        env.update(extra)
        return env

    def stop(self, pid: int) -> None:
        """SIGKILL the command started as `pid`. In a PID namespace, its init (unshare's
        child): the kernel then kills everything in the namespace and the dying init reaps
        it, and unshare reaps the init and exits. Killing unshare first would hand the init to
        whatever reaps orphans here, which in a container may be nobody (a zombie per call).
        Without a namespace: the process group."""
        if "--pid" in self.plan().prefix:
            children = _children(pid)
            for child in children:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
            if children:
                return
        kill_group(pid)

    def prepare_workspace(self, workspace: Path) -> None:
        """Make the folder writable by the sandbox user (only a folder the worker owns)."""
        workspace.mkdir(parents=True, exist_ok=True)
        uid, gid = self.plan().uid, self.plan().gid
        if uid is None or gid is None:
            return
        st = workspace.stat()
        if st.st_uid == os.geteuid() and st.st_uid != uid:
            os.chown(workspace, uid, gid)

    def preexec(self) -> Callable[[], None]:
        """Runs in the child between fork and exec: limits, then die with the worker."""
        cfg = self.config
        limits = [
            (resource.RLIMIT_CPU, cfg.cpu_s, cfg.cpu_s + 5),
            (resource.RLIMIT_AS, cfg.memory_mb << 20, cfg.memory_mb << 20),
            (resource.RLIMIT_FSIZE, cfg.file_mb << 20, cfg.file_mb << 20),
            # Counted per user across the machine; root is exempt, hence the user of its own.
            (resource.RLIMIT_NPROC, cfg.max_procs, cfg.max_procs),
        ]

        def run() -> None:
            for which, soft, hard in limits:
                with contextlib.suppress(ValueError, OSError):
                    resource.setrlimit(which, (soft, hard))
            _die_with_parent()

        return run


def _works(argv: list[str]) -> bool:
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _sandbox_user(name: str) -> tuple[int, int]:
    """The sandbox user's uid and gid: the named user, created as a system user when missing,
    else `nobody`."""
    for attempt in range(2):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            if attempt or not shutil.which("useradd"):
                break
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home", "--shell",
                 "/usr/sbin/nologin", name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )  # fmt: skip
    log.warning("tool user %r is missing and could not be created: using nobody", name)
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _die_with_parent() -> None:
    # A worker killed with SIGKILL cannot clean up; on Linux the kernel ends the command too
    # (and unshare's --kill-child then ends everything in its namespace).
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces; the ppid follows the state.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# -- secrets -----------------------------------------------------------------------------------


class Redactor:
    """Replaces the values of configured secrets with `[redacted:NAME]`."""

    def __init__(self, by_value: Mapping[str, str]) -> None:
        """`by_value` maps each secret value to the name shown in its place; keyed by value
        because one name can carry two values (a key in the settings and in the environment)
        and both must go. Values shorter than MIN_SECRET_CHARS are left alone: redacting
        `postgres` or `1` would garble ordinary output and protect nothing."""
        # Longest first, so a secret that contains another is replaced whole.
        pairs = sorted(
            ((v, n) for v, n in by_value.items() if v and len(v) >= MIN_SECRET_CHARS),
            key=lambda kv: -len(kv[0]),
        )
        self._names = dict(pairs)
        self._pattern = re.compile("|".join(re.escape(v) for v, _ in pairs)) if pairs else None

    @property
    def names(self) -> list[str]:
        return sorted(set(self._names.values()))

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: f"[redacted:{self._names[m.group(0)]}]", text)

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> Redactor:
        """OPENAI_API_KEY, the database password, AGENTRUN_PAYLOAD_KEYS (whole and each key)
        and every variable named in AGENTRUN_SECRET_ENV."""
        env = os.environ if environ is None else environ
        secrets: dict[str, str] = {}
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        for value in (key, env.get("OPENAI_API_KEY")):
            if value:
                secrets[value] = "OPENAI_API_KEY"
        for url in (settings.database_url, env.get("AGENTRUN_DATABASE_URL")):
            password = urlsplit(url).password if url else None
            if password:
                secrets[password] = "AGENTRUN_DATABASE_URL"
        for name in ("AGENTRUN_PAYLOAD_KEYS", *settings.secret_env):
            value = env.get(name)
            if not value:
                continue
            secrets[value] = name
            for part in _parts(value):
                secrets.setdefault(part, name)
        return cls(secrets)


def _parts(value: str) -> Iterable[str]:
    """The pieces of a list-valued secret such as `kid1:key1,kid2:key2`."""
    for item in re.split(r"[,;\s]+", value):
        yield item
        for sep in (":", "="):
            if sep in item:
                yield item.split(sep, 1)[1]
