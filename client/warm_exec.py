"""A warm ClientApp executor: ``flower-superexec`` that forks instead of spawning.

A SuperNode started with ``--isolation process`` leaves each ClientApp task to an
executor polling its Runtime API. Flower's ``flower-superexec`` starts a fresh
``flwr-clientapp`` process per task, which imports torch, Opacus, pandas and
scikit-learn again every time (tens of seconds a round on a small machine). This
executor imports them once, then forks a child per task that runs Flower's own
ClientApp task entry (``flwr.supernode.runtime.run_clientapp.run_clientapp``,
what ``flwr-clientapp`` runs) and leaves with ``os._exit``.

Everything else is Flower's: the polling loop, the task acquisition, the plugin
that turns a task into an ``ExecutionSpec``, TLS and the shared-secret auth. Only
the executor (Flower's ``Executor`` protocol, whose shipped implementations are
``SubprocessExecutor`` and ``KubernetesExecutor``) is ours, and the loop's sleep:
``client.contract.polling.install_superexec_poll`` backs it off from 50 ms to 1 s
while idle (``--poll-first-s``, ``--poll-max-s``), and ``--wake FIFO`` ends it at
once when the SuperNode has stored a message. Command line, as
``flower-superexec --plugin-type clientapp``::

    python -m client.warm_exec --appio-api-address 127.0.0.1:9094 --insecure
    python -m client.warm_exec --runtime-api-address node:9094 --root-certificates ca.pem

fedwarden's own modules are not preloaded by default: each child imports the
ClientApp from the FAB the run ships, as ``flwr-clientapp`` does. ``--preload
client.app`` (what ``fedwarden client join --warm`` passes) imports the node's own
installed ClientApp once instead: Flower's loader takes a module already imported,
so every task then runs the node's installed code, not the coordinator's FAB,
and saves its import (seconds a task on a loaded machine).

Flower's ``run_clientapp`` unpacks, verifies and installs the run's FAB again for
every task; ``cache_fab_installs`` (a seam on the name ``install_from_fab`` in
``flwr.supernode.runtime.run_clientapp``, pinned like ``client.contract.polling``)
installs each FAB (by its SHA-256) once and hands later tasks the installed
folder. The children are
reaped at every poll; SIGTERM or SIGINT stops them (SIGTERM, then SIGKILL after
``--stop-timeout``) before the executor leaves, and each child also leaves by
itself if the executor dies (Flower's parent-process monitor, ``--parent-pid``).
A child whose task succeeded runs the work that task deferred (``client.deferred``:
the next round's accounting) after its reply has gone, then leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import flwr.supercore.superexec.run_superexec as superexec_loop
from flwr.common.constant import ExecPluginType
from flwr.supercore.auth import add_superexec_auth_secret_args, load_superexec_auth_secret
from flwr.supercore.constant import ExecutorType, TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult

from client import deferred
from client.contract.polling import (
    WakeChannel,
    add_poll_args,
    install_object_pull_backoff,
    install_superexec_poll,
    poll_settings,
)
from privacy.redaction import install_log_redaction

logger = logging.getLogger(__name__)

DEFAULT_PRELOAD: tuple[str, ...] = (
    "torch",
    "torch._dynamo",  # imported by the first optimizer a process builds: ~3 s on a loaded node
    "opacus",
    "numpy",
    "pandas",
    "sklearn",
    "flwr.client",
    "flwr.clientapp",
    "flwr.supernode.runtime.run_clientapp",
)
"""Third-party modules the fedwarden ClientApp imports: the cost a fork saves."""

_EXECUTOR_SEAM = "get_executor"
_FAB_SEAM_MODULE = "flwr.supernode.runtime.run_clientapp"
_FAB_SEAM = "install_from_fab"
FAB_CACHE = ".fedwarden-installed"
"""Folder under ``FLWR_HOME/apps`` naming the FABs installed already (one file per SHA-256)."""

TaskRunner = Callable[[ExecutionSpec], int]
"""Runs one task in the forked child and returns its exit status."""


def run_clientapp_task(spec: ExecutionSpec) -> int:
    """Run one ClientApp task with Flower's own entry, as ``flwr-clientapp`` would."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(
                spec.root_certificates_path, spec.insecure
            ),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=False,
        )
    except SystemExit as exc:  # run_clientapp always leaves through flwr_exit
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@dataclass(frozen=True)
class ChildExit:
    """How one forked task ended."""

    task_id: int
    pid: int
    exit_code: int
    """The child's exit status, or minus the signal that ended it."""


class ForkExecutor:
    """Flower ``Executor`` that forks this (preloaded) process once per ClientApp task."""

    def __init__(
        self,
        *,
        run_task: TaskRunner = run_clientapp_task,
        max_children: int | None = None,
        stop_timeout_s: float = 4.0,
    ) -> None:
        self._run_task = run_task
        self._max_children = max_children
        self._stop_timeout_s = stop_timeout_s
        self._owner_pid = os.getpid()
        self._children: dict[int, int] = {}  # pid -> task_id
        self.finished: list[ChildExit] = []
        self.on_launch: Callable[[], None] | None = None
        """Told after each fork (the task poll's back-off starts short again)."""

    @property
    def running(self) -> dict[int, int]:
        """The live children: pid to task id."""
        return dict(self._children)

    def get_eligible_capacity(
        self,
        supported_task_types: set[TaskType],
        *,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> tuple[set[TaskType], set[str]]:
        """Only ClientApp tasks, and none while ``max_children`` are running."""
        del insecure, root_certificates_path
        if self._max_children is not None and len(self._children) >= self._max_children:
            return set(), set()
        return supported_task_types & {TaskType.CLIENT_APP}, set()

    def wait_for_capacity(
        self,
        task_type: TaskType | None = None,
        *,
        fab_hash: str | None = None,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> None:
        """Reap finished children until one more task may start."""
        del task_type, fab_hash, insecure, root_certificates_path
        while self._max_children is not None and len(self._children) >= self._max_children:
            self.reap()
            time.sleep(0.05)

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        """Fork a child that runs the task; the parent returns at once."""
        if spec.task_type != TaskType.CLIENT_APP:
            return LaunchResult.failed(f"the warm executor runs ClientApps, not {spec.task_type}")
        if spec.runtime_dependency_install:
            return LaunchResult.failed("the warm executor runs in its preloaded environment")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child_main(self._run_task, spec)  # never returns
        self._children[pid] = spec.task_id
        logger.info("task %d: forked child %d", spec.task_id, pid)
        if self.on_launch is not None:
            self.on_launch()
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Called by Flower's loop before every poll: reap finished children."""
        self.reap()

    def reap(self) -> list[ChildExit]:
        """Collect every child that has ended, so none is left a zombie."""
        ended = []
        for pid, task_id in list(self._children.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # already collected elsewhere
                done, status = pid, 0
            if done == 0:
                continue
            del self._children[pid]
            code = os.waitstatus_to_exitcode(status)
            ended.append(ChildExit(task_id=task_id, pid=pid, exit_code=code))
            log = logger.info if code == 0 else logger.warning
            log("task %d: child %d exited with %d", task_id, pid, code)
        self.finished.extend(ended)
        return ended

    def close(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL past the timeout) and reap it."""
        if os.getpid() != self._owner_pid:
            return  # a child inherited this object; only the parent owns the children
        for pid in self._children:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        while self._children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in self._children:
            _signal(pid, signal.SIGKILL)
        while self._children:
            self.reap()
            time.sleep(0.01)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _child_main(run_task: TaskRunner, spec: ExecutionSpec) -> None:
    """The forked child: drop what belongs to the parent, run the task, leave hard."""
    code = 1
    try:
        from flwr.supercore.exit import exit_handler

        # The parent's exit handlers close its Runtime API client and its executor;
        # the child must not touch either (a TLS close would go down the shared socket).
        exit_handler.registered_exit_handlers.clear()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        deferred.enable()
        code = run_task(spec)
        if code == 0:  # the reply has gone: what the task left for later, then leave
            deferred.run_deferred()
    except BaseException:
        logger.exception("task %d failed in the warm executor's child", spec.task_id)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def cache_fab_installs() -> None:
    """Install each FAB once: later tasks of the same FAB get the installed folder.

    Raises ``FlowerSeamError`` if Flower's ClientApp entry no longer installs the FAB
    through the name ``install_from_fab``.
    """
    import hashlib
    import inspect

    from client.contract.errors import FlowerSeamError

    module = importlib.import_module(_FAB_SEAM_MODULE)
    install = getattr(module, _FAB_SEAM, None)
    if install is None or "install_from_fab(fab.content" not in inspect.getsource(
        module.run_clientapp
    ):
        raise FlowerSeamError(
            f"{_FAB_SEAM_MODULE}.run_clientapp no longer installs the FAB through "
            f"{_FAB_SEAM}(fab.content, ...): the warm executor's FAB cache is pinned to Flower 1.41"
        )

    def install_once(fab_file: bytes, *args: object, **kwargs: object) -> Path:
        from flwr.supercore.utils import get_flwr_home

        digest = hashlib.sha256(fab_file).hexdigest()
        marker = Path(get_flwr_home()) / "apps" / FAB_CACHE / digest
        with contextlib.suppress(OSError):
            installed = Path(marker.read_text().strip())
            if installed.is_dir():
                return installed
        path = Path(install(fab_file, *args, **kwargs))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(path))
        return path

    setattr(module, _FAB_SEAM, install_once)


def preload(modules: Sequence[str]) -> float:
    """Import ``modules`` in this process (the children inherit them); the seconds it took."""
    began = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - began


def run_warm_exec(
    executor: ForkExecutor,
    *,
    runtime_api_address: str,
    insecure: bool,
    root_certificates_path: str | None = None,
    superexec_auth_secret: bytes | None = None,
    parent_pid: int | None = None,
) -> None:
    """Run Flower's SuperExec loop with ``executor`` in place of its subprocess executor."""

    def use_fork_executor(*_args: object, **_kwargs: object) -> ForkExecutor:
        return executor

    # Flower's loop builds its executor through this one seam; fail loudly if it moves.
    original = getattr(superexec_loop, _EXECUTOR_SEAM, None)
    if original is None:
        raise RuntimeError(
            f"flwr.supercore.superexec.run_superexec has no {_EXECUTOR_SEAM}(); "
            "this Flower version is not supported by the warm executor"
        )
    setattr(superexec_loop, _EXECUTOR_SEAM, use_fork_executor)
    try:
        superexec_loop.run_superexec(
            runtime_api_address=runtime_api_address,
            insecure=insecure,
            root_certificates_path=root_certificates_path,
            superexec_auth_secret=superexec_auth_secret,
            parent_pid=parent_pid,
            runtime_dependency_install=False,
            executor_type=ExecutorType.SUBPROCESS,
        )
    finally:
        setattr(superexec_loop, _EXECUTOR_SEAM, original)
        executor.close()


def build_parser() -> argparse.ArgumentParser:
    """The ``flower-superexec --plugin-type clientapp`` command line, plus preloading."""
    parser = argparse.ArgumentParser(
        prog="python -m client.warm_exec",
        description="Run a SuperNode's ClientApp tasks in forks of one preloaded process.",
    )
    address = parser.add_mutually_exclusive_group(required=True)
    address.add_argument("--appio-api-address", dest="runtime_api_address", metavar="HOST:PORT")
    address.add_argument("--runtime-api-address", dest="runtime_api_address", metavar="HOST:PORT")
    parser.add_argument(
        "--plugin-type",
        choices=[ExecPluginType.CLIENT_APP],
        default=ExecPluginType.CLIENT_APP,
        help="Accepted for flower-superexec compatibility; only clientapp is served.",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="Plain HTTP to the Runtime API.")
    tls.add_argument("--root-certificates", metavar="ROOT_CERT", help="CA of the Runtime API.")
    parser.add_argument("--parent-pid", type=int, help="Leave when this process ends.")
    parser.add_argument(
        "--preload",
        action="append",
        metavar="MODULE",
        help="Module to import before forking, besides torch, opacus, numpy, pandas, "
        "sklearn and Flower's ClientApp runtime (repeatable; e.g. client.app).",
    )
    parser.add_argument(
        "--max-concurrent-tasks",
        type=int,
        help="Children at most at once, a child counting until its deferred work is done "
        "(default: no limit).",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=4.0,
        help="Seconds between SIGTERM and SIGKILL to the children (Flower force-exits the "
        "executor 5 s after it gets SIGTERM; the children also leave when it is gone).",
    )
    parser.add_argument(
        "--wake",
        metavar="FIFO",
        help="FIFO the SuperNode (python -m client.fast_poll --wake FIFO) writes to when it "
        "stores a message: the task is asked for at once, not at the next poll.",
    )
    add_poll_args(parser)
    add_superexec_auth_secret_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m client.warm_exec``."""
    args = build_parser().parse_args(argv)
    install_log_redaction()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s warm_exec: %(message)s"))
    logger.addHandler(handler)  # Flower's own logger already writes its lines
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a preloaded library may have configured the root logger
    modules = [*DEFAULT_PRELOAD, *(args.preload or ())]
    seconds = preload(modules)
    logger.info("preloaded %s in %.1f s", ", ".join(modules), seconds)
    cache_fab_installs()
    install_object_pull_backoff()  # the children pull their message from the SuperNode
    executor = ForkExecutor(
        max_children=args.max_concurrent_tasks, stop_timeout_s=args.stop_timeout
    )
    wake = WakeChannel(args.wake) if args.wake else None
    executor.on_launch = install_superexec_poll(poll_settings(args), wake=wake).reset
    run_warm_exec(
        executor,
        runtime_api_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates_path=args.root_certificates,
        superexec_auth_secret=load_superexec_auth_secret(args.superexec_auth_secret_file),
        parent_pid=args.parent_pid,
    )


if __name__ == "__main__":
    main()
