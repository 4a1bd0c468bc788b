"""The coordinator's ServerApp executor: Flower's SuperExec, its ServerApps polling fast.

A SuperLink started with ``--isolation process`` leaves its ServerApp tasks to
an executor polling its ServerAppIo (Runtime) API. ``fedwarden coordinator
start`` runs this one beside it::

    python -m server.engine.fast_serverapp exec --runtime-api-address 127.0.0.1:9093 \\
        --root-certificates pki/ca.crt --parent-pid SUPERLINK_PID

``exec`` is Flower's own SuperExec loop (``run_superexec``: task acquisition,
TLS, the plugin that turns a task into an ``ExecutionSpec``), with only its
executor replaced, through the one function it builds it with
(``get_executor``): ``ServerAppExecutor`` starts each ServerApp as
``python -m server.engine.fast_serverapp serverapp ARGS`` instead of
``flwr-serverapp ARGS``. ``serverapp`` installs ``client.contract.polling``'s grid seam
(the grid's 3 s pull sleep becomes a back-off from 50 ms to 1 s, which the SuperLink's
reply wake, ``--wake FIFO``, ends as soon as a node's reply is in) and then runs
Flower's ``flwr-serverapp`` entry with the same arguments. The SuperExec's own
task poll backs off from ``TASK_POLL.first_s`` to ``TASK_POLL.max_s`` while no
run is submitted (``client.contract.polling.install_superexec_poll``): polled at a
fixed 0.1 s it was a third of the SuperLink's requests during a run.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from client.contract.errors import FlowerSeamError
from client.contract.polling import (
    PollSettings,
    WakeChannel,
    add_poll_args,
    install_grid_poll,
    install_object_pull_backoff,
    install_superexec_poll,
    poll_settings,
)

logger = logging.getLogger(__name__)

TASK_POLL = PollSettings(first_s=0.1, max_s=1.0, busy_max_s=1.0)
"""The executor's task poll: how soon a submitted run's ServerApp starts. No busy
window: a launch is not followed by another within seconds (polled every 0.2 s after
a launch it was 160 of a run's 2,400 SuperLink requests)."""

_EXECUTOR_SEAM = "get_executor"


def executor_argv(
    *, runtime_api_address: str, ca_certificate: Path, parent_pid: int, wake: Path | None = None
) -> list[str]:
    """The command ``coordinator start`` runs beside a ``--isolation process`` SuperLink
    (``wake``: the SuperLink's ``--wake-fifo``, on which its ServerApps wait for replies)."""
    return [
        sys.executable, "-m", "server.engine.fast_serverapp", "exec",
        "--runtime-api-address", runtime_api_address,
        "--root-certificates", str(ca_certificate.resolve()),
        "--parent-pid", str(parent_pid),
        *(["--wake", str(wake)] if wake is not None else []),
    ]  # fmt: skip


class ServerAppExecutor:
    """Flower ``Executor`` that runs ServerApp tasks as ``serverapp`` children of this module."""

    def __init__(self, *, poll_args: Sequence[str] = ()) -> None:
        self._poll_args = list(poll_args)
        self._children: list[subprocess.Popen[bytes]] = []
        self.on_launch: Callable[[], None] | None = None
        """Told after each ServerApp starts (the task poll's back-off starts short again)."""

    def get_eligible_capacity(
        self,
        supported_task_types: set[object],
        *,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> tuple[set[object], set[str]]:
        """ServerApp tasks only."""
        from flwr.supercore.constant import TaskType

        del insecure, root_certificates_path
        return supported_task_types & {TaskType.SERVER_APP}, set()

    def wait_for_capacity(self, *_args: object, **_kwargs: object) -> None:
        """No capacity gate: one ServerApp per run."""

    def launch(self, spec: object) -> object:
        """Start the ServerApp of one task (Flower's ``flwr-serverapp`` arguments)."""
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult

        assert isinstance(spec, ExecutionSpec)
        if spec.task_type != TaskType.SERVER_APP:
            return LaunchResult.failed(f"this executor runs ServerApps, not {spec.task_type}")
        argv = [
            sys.executable, "-m", "server.engine.fast_serverapp", "serverapp", *self._poll_args,
            "--runtime-api-address", spec.runtime_api_address, "--token", spec.token,
        ]  # fmt: skip
        if spec.insecure:
            argv.append("--insecure")
        elif spec.root_certificates_path is not None:
            argv += ["--root-certificates", spec.root_certificates_path]
        if spec.parent_pid is not None:
            argv += ["--parent-pid", str(spec.parent_pid)]
        if spec.runtime_dependency_install:
            argv.append("--allow-runtime-dependency-installation")
        quiet = subprocess.DEVNULL if spec.suppress_output else None
        self._children.append(subprocess.Popen(argv, stdout=quiet, stderr=quiet))
        logger.info("task %d: ServerApp process %d", spec.task_id, self._children[-1].pid)
        if self.on_launch is not None:
            self.on_launch()
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Forget the ServerApps that have ended (no zombies)."""
        self._children = [child for child in self._children if child.poll() is None]

    def close(self) -> None:
        """Stop the ServerApps still running (the SuperLink marks their runs as failed)."""
        for child in self._children:
            if child.poll() is None:
                child.terminate()
        for child in self._children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._children = []


def run_exec(argv: Sequence[str]) -> None:
    """Flower's SuperExec loop with ``ServerAppExecutor`` (``exec ARGS``)."""
    parser = argparse.ArgumentParser(prog="python -m server.engine.fast_serverapp exec")
    parser.add_argument("--runtime-api-address", required=True)
    tls = parser.add_mutually_exclusive_group(required=True)
    tls.add_argument("--insecure", action="store_true")
    tls.add_argument("--root-certificates")
    parser.add_argument("--parent-pid", type=int)
    add_poll_args(parser)
    parser.add_argument("--wake", metavar="FIFO", help="The SuperLink's reply wake.")
    args = parser.parse_args(argv)
    poll_settings(args)  # checked here, used by each ServerApp
    import flwr.supercore.superexec.run_superexec as superexec_loop

    poll_args = [
        "--poll-first-s", str(args.poll_first_s),
        "--poll-max-s", str(args.poll_max_s),
        "--poll-busy-max-s", str(args.poll_busy_max_s),
        *(["--wake", args.wake] if args.wake else []),
    ]  # fmt: skip
    executor = ServerAppExecutor(poll_args=poll_args)
    if getattr(superexec_loop, _EXECUTOR_SEAM, None) is None:
        raise FlowerSeamError(
            f"flwr.supercore.superexec.run_superexec has no {_EXECUTOR_SEAM}(); "
            "this Flower version is not supported by the ServerApp executor"
        )
    setattr(superexec_loop, _EXECUTOR_SEAM, lambda *_a, **_k: executor)
    executor.on_launch = install_superexec_poll(TASK_POLL).reset
    superexec_loop.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates_path=args.root_certificates,
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )


def run_serverapp(argv: Sequence[str]) -> None:
    """Flower's ``flwr-serverapp`` with the grid's poll seam installed (``serverapp ARGS``)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_poll_args(parser)
    parser.add_argument("--wake")
    ours, theirs = parser.parse_known_args(argv)
    install_grid_poll(poll_settings(ours), wake=WakeChannel(ours.wake) if ours.wake else None)
    install_object_pull_backoff()
    from flwr.superlink.cli.flwr_serverapp import flwr_serverapp

    sys.argv = ["flwr-serverapp", *theirs]
    flwr_serverapp()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m server.engine.fast_serverapp exec|serverapp ARGS``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("exec", "serverapp"):
        sys.exit("usage: python -m server.engine.fast_serverapp exec|serverapp ARGS")
    if args[0] == "exec":
        run_exec(args[1:])
    else:
        run_serverapp(args[1:])


if __name__ == "__main__":
    main()
