"""The warm ClientApp executor: children forked, reaped and stopped; a real deployment run."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.exit import exit_handler
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResultStatus

from client.warm_exec import ForkExecutor, build_parser

PROJECT = Path(__file__).resolve().parents[2]


def spec(task_id: int, task_type: TaskType = TaskType.CLIENT_APP) -> ExecutionSpec:
    return ExecutionSpec(
        task_type=task_type,
        runtime_api_address="127.0.0.1:1",
        token="token",
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=os.getpid(),
        suppress_output=False,
        task_id=task_id,
    )


def wait_for_children(executor: ForkExecutor, *, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while executor.running and time.monotonic() < deadline:
        executor.reconcile()
        time.sleep(0.02)


def exit_with_task_id(task: ExecutionSpec) -> int:
    return task.task_id


def sleep_long(_task: ExecutionSpec) -> int:
    time.sleep(120)
    return 0


def count_inherited_exit_handlers(_task: ExecutionSpec) -> int:
    return len(exit_handler.registered_exit_handlers)


def defer_a_file_then_exit(task: ExecutionSpec) -> int:
    from client import deferred

    marker = Path(os.environ["FEDWARDEN_TEST_DEFERRED"]) / str(task.task_id)
    deferred.after_reply("a marker", marker.touch)
    return task.task_id % 2  # task 1 fails: its deferred work is dropped


def test_a_child_runs_what_its_task_deferred_only_after_a_successful_reply(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("FEDWARDEN_TEST_DEFERRED", str(tmp_path))
    executor = ForkExecutor(run_task=defer_a_file_then_exit)

    for task_id in (1, 2):
        executor.launch(spec(task_id))
    wait_for_children(executor)

    assert sorted((c.task_id, c.exit_code) for c in executor.finished) == [(1, 1), (2, 0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2"]


def test_finished_children_are_reaped_with_their_exit_codes() -> None:
    executor = ForkExecutor(run_task=exit_with_task_id)

    results = [executor.launch(spec(task_id)) for task_id in (1, 2, 3)]
    pids = list(executor.running)
    wait_for_children(executor)

    assert all(r.status == LaunchResultStatus.ACCEPTED for r in results)
    assert executor.running == {}
    assert sorted((c.task_id, c.exit_code) for c in executor.finished) == [(1, 1), (2, 2), (3, 3)]
    for pid in pids:  # collected: no zombie is left behind
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_close_stops_running_children_with_sigterm() -> None:
    executor = ForkExecutor(run_task=sleep_long, stop_timeout_s=10.0)
    executor.launch(spec(1))
    executor.launch(spec(2))

    began = time.monotonic()
    executor.close()

    assert time.monotonic() - began < 10.0
    assert executor.running == {}
    assert [c.exit_code for c in executor.finished] == [-signal.SIGTERM, -signal.SIGTERM]


def test_a_child_does_not_inherit_the_parents_flower_exit_handlers() -> None:
    exit_handler.add_exit_handler(lambda: None)
    try:
        executor = ForkExecutor(run_task=count_inherited_exit_handlers)
        executor.launch(spec(1))
        wait_for_children(executor)
    finally:
        exit_handler.registered_exit_handlers.pop()

    assert [c.exit_code for c in executor.finished] == [0]


def test_only_clientapp_tasks_within_the_concurrency_limit() -> None:
    executor = ForkExecutor(run_task=sleep_long, max_children=1, stop_timeout_s=5.0)

    offered = executor.get_eligible_capacity({TaskType.CLIENT_APP, TaskType.SERVER_APP})
    refused = executor.launch(spec(1, TaskType.SERVER_APP))
    executor.launch(spec(2))
    full = executor.get_eligible_capacity({TaskType.CLIENT_APP})
    executor.close()

    assert offered == ({TaskType.CLIENT_APP}, set())
    assert refused.status == LaunchResultStatus.FAILED
    assert full == (set(), set())


def test_command_line_matches_flower_superexec() -> None:
    args = build_parser().parse_args(
        ["--appio-api-address", "127.0.0.1:9094", "--insecure", "--plugin-type", "clientapp"]
    )
    other = build_parser().parse_args(
        ["--runtime-api-address", "node:9094", "--root-certificates", "ca.pem"]
    )

    assert (args.runtime_api_address, args.insecure) == ("127.0.0.1:9094", True)
    assert (other.runtime_api_address, other.root_certificates) == ("node:9094", "ca.pem")


def load_bench() -> ModuleType:
    """The deployment harness lives with the benchmark that times it."""
    path = PROJECT / "benchmarks" / "bench_deployment.py"
    module_spec = importlib.util.spec_from_file_location("bench_deployment", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["bench_deployment"] = module
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_deployment_run_completes_over_the_warm_executor(tmp_path: Path) -> None:
    bench = load_bench()

    with bench.local_federation("warm", institutions=2, root=tmp_path) as federation:
        federation.run(  # raises unless `flwr run` reports the run finished
            "num-server-rounds=1 secagg=false dp=true min-institutions=2 profile=false",
            timeout_s=180,
        )
        forked = [
            line
            for index in range(2)
            for line in (tmp_path / f"exec{index}.log").read_text().splitlines()
            if "forked child" in line
        ]

    assert forked  # the ClientApps ran in forks of the warm executors
    assert "exited with 0" in (tmp_path / "exec0.log").read_text()


def test_each_fab_is_installed_once_by_flowers_clientapp_entry(tmp_path, monkeypatch):
    import inspect

    from client import warm_exec

    module = importlib.import_module(warm_exec._FAB_SEAM_MODULE)
    # Pinned to Flower 1.41: run_clientapp installs the FAB through this module's name.
    assert "install_from_fab(fab.content" in inspect.getsource(module.run_clientapp)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    installs: list[bytes] = []

    def install(fab: bytes, skip_prompt: bool = False) -> Path:
        installs.append(fab)
        folder = tmp_path / "apps" / f"app-{len(installs)}"
        folder.mkdir(parents=True)
        return folder

    monkeypatch.setattr(module, warm_exec._FAB_SEAM, install)
    warm_exec.cache_fab_installs()

    first = module.install_from_fab(b"fab one", skip_prompt=True)
    again = module.install_from_fab(b"fab one", skip_prompt=True)
    other = module.install_from_fab(b"fab two", skip_prompt=True)
    first.rmdir()  # removed by hand: installed again
    reinstalled = module.install_from_fab(b"fab one", skip_prompt=True)

    assert first == again != other
    assert installs == [b"fab one", b"fab two", b"fab one"]
    assert reinstalled.is_dir()
