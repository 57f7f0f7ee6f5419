"""Leadwire services (and any helper process) as real child processes, the way they run in
production: `python -m faststream run services.<name>.main:app`.

Each process runs under a *slot* name ("router", "router#2", "buyer"); a slot can be killed and
started again with the same command and environment (the fault run's SIGKILLs). `stop()` sends
SIGTERM, which lets a service finish its in-flight messages, and SIGKILLs what hangs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment with `settings` in it, so that a child's `Settings()` equals
    `settings` (unset optional values are left to the child's defaults); `extra` on top."""
    env = dict(os.environ)
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None or info.alias is None:
            continue
        env[info.alias] = value if isinstance(value, str) else json.dumps(value)
    env.update(extra)
    return env


def output(process: subprocess.Popen[bytes]) -> str:
    """What a process started with `output=PIPE` printed (read once it has exited)."""
    return process.stdout.read().decode("utf-8", "replace") if process.stdout is not None else ""


def service_argv(service: str) -> list[str]:
    return [sys.executable, "-m", "faststream", "run", f"services.{service}.main:app"]


@dataclass
class _Child:
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]


class Processes:
    """Children by slot. Output goes to `log_dir/<slot>.log` (appended across restarts) when a
    log directory is given, else to `output`: DEVNULL, PIPE for a test that reads it, or None to
    share this process's terminal (the demo)."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        log_dir: Path | None = None,
        output: int | None = subprocess.DEVNULL,
    ) -> None:
        self.env = dict(env if env is not None else os.environ)
        self.log_dir = log_dir
        self.output = output
        self._children: dict[str, _Child] = {}

    def spawn(self, slot: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        """Start `argv` (from the repository root) under `slot`, with `env` on top of the
        launcher's environment."""
        child = _Child(argv, {**self.env, **env}, self._popen(slot, argv, {**self.env, **env}))
        self._children[slot] = child
        return child.process

    def service(self, service: str, *, slot: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        """Start one process of a Leadwire service (slot: the service's name unless given)."""
        return self.spawn(slot or service, service_argv(service), **env)

    def _popen(self, slot: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        if self.log_dir is None:
            errors = subprocess.STDOUT if self.output is not None else None
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.output, stderr=errors)
        # The child gets its own copy of the file descriptor; ours is closed at once.
        with open(self.log_dir / f"{slot.replace('#', '-')}.log", "ab") as log:
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def __getitem__(self, slot: str) -> subprocess.Popen[bytes]:
        return self._children[slot].process

    @property
    def slots(self) -> list[str]:
        return list(self._children)

    def pids(self) -> dict[str, int]:
        return {slot: c.process.pid for slot, c in self._children.items()}

    def kill_and_restart(self, slot: str) -> subprocess.Popen[bytes]:
        """SIGKILL the slot's process (no clean-up, as a crash) and start it again at once."""
        child = self._children[slot]
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGKILL)
        child.process.wait()
        child.process = self._popen(slot, child.argv, child.env)
        return child.process

    def exited(self) -> list[str]:
        """Slots whose process has exited."""
        return [slot for slot, c in self._children.items() if c.process.poll() is not None]

    def restart_exited(self) -> list[str]:
        """Start again every process that exited on its own; returns their slots."""
        exited = self.exited()
        for slot in exited:
            child = self._children[slot]
            child.process = self._popen(slot, child.argv, child.env)
        return exited

    def check_alive(self, where: str = "") -> None:
        dead = self.exited()
        if dead:
            raise RuntimeError(f"process(es) exited: {', '.join(dead)}{where}")

    def stop(self, slots: list[str] | None = None, *, grace: float = 20.0) -> list[str]:
        """SIGTERM the chosen slots (every slot by default), wait up to `grace` seconds in all, then
        SIGKILL what is left. Returns the slots that had to be killed."""
        chosen = {s: c for s, c in self._children.items() if slots is None or s in slots}
        for child in chosen.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        hung = []
        deadline = time.monotonic() + grace
        for slot, child in chosen.items():
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(slot)
                child.process.kill()
                child.process.wait()
            del self._children[slot]
        return hung
