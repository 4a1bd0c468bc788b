"""Training-side costs, measured in one run.

1. One DP-SGD step divided by one non-private step (same model, batch 256, one
   CPU thread), for each per-sample gradient mode (Opacus hooks, ghost clipping,
   torch.func), for the digits CNN and the Fashion-MNIST CNN; on CUDA too when
   a GPU is present (GPU vs CPU step time).
2. Seconds per federated round on Flower's simulation engine, SecAgg+ and DP-SGD
   on, the DP CNN on Fashion-MNIST (the first 12,000 images, IID; ``--dataset
   digits``: the 8x8 CNN on scikit-learn's digits): 10 and 100 institutions all
   training, 1,000 institutions with fraction-fit 0.1; rounds 2.. of each run
   (round 1 pays Ray's start-up); the peak resident memory of the whole
   simulation (this process and every process it started: Ray's raylet, GCS and
   workers), sampled every second; and the seconds of each phase of the run.

    python benchmarks/bench_training.py [--institutions 10 100 1000] [--rounds 3]
        [--dataset fashion-mnist-small | digits] [--skip-steps]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from client.contract.architecture import ModelSpec
from client.image_datasets import fashion_mnist_available
from client.models import build_model
from client.training import PREFERRED_GRAD_SAMPLE_MODE, train_locally
from privacy.dpsgd import GRAD_SAMPLE_MODES
from simulations.runner import prepare, simulate
from simulations.scenario import Scenario

BATCH = 256


def step_times(spec: ModelSpec, device: torch.device, *, steps: int = 8) -> dict[str, float]:
    """Seconds per step at batch ``BATCH``: non-private, then each per-sample gradient mode."""
    rng = np.random.default_rng(0)
    n = BATCH * steps
    features = rng.normal(size=(n, spec.num_features)).astype(np.float32)
    labels = rng.integers(0, spec.num_classes, n)
    times: dict[str, float] = {}
    for mode in ("plain", *GRAD_SAMPLE_MODES):
        runs = []
        for repeat in range(3):  # the first run warms caches and imports
            began = time.perf_counter()
            train_locally(
                build_model(spec, seed=0),
                features,
                labels,
                epochs=1,
                learning_rate=0.5,
                sample_rate=1 / steps,
                noise_multiplier=None if mode == "plain" else 1.0,
                max_grad_norm=1.0,
                seed=repeat,
                device=device,
                grad_sample_mode=None if mode == "plain" else mode,
            )
            if device.type == "cuda":
                torch.cuda.synchronize()
            runs.append((time.perf_counter() - began) / steps)
        times[mode] = min(runs[1:])
    return times


def print_step_ratios() -> None:
    torch.set_num_threads(1)
    models = {
        "digits cnn": ModelSpec(name="cnn", num_features=64, num_classes=10, image_shape=(8, 8)),
        "fashion dpcnn": ModelSpec(
            name="dpcnn", num_features=784, num_classes=10, image_shape=(28, 28)
        ),
    }
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"== one step at batch {BATCH}: DP-SGD per per-sample gradient mode vs non-private")
    for label, spec in models.items():
        chosen = PREFERRED_GRAD_SAMPLE_MODE.get(type(build_model(spec)).__name__, "hooks")
        per_device = {}
        for device in devices:
            times = step_times(spec, device)
            per_device[device.type] = times
            cells = "  ".join(
                f"{mode} {times[mode] * 1e3:6.1f} ms ({times[mode] / times['plain']:4.2f}x)"
                for mode in GRAD_SAMPLE_MODES
            )
            print(
                f"{label:>14} {device.type}: plain {times['plain'] * 1e3:6.1f} ms  {cells}"
                f"  [chosen: {chosen}]"
            )
        if "cuda" in per_device:
            cpu, gpu = per_device["cpu"][chosen], per_device["cuda"][chosen]
            print(f"{label:>14} GPU vs CPU DP step ({chosen}): {gpu / cpu:5.3f}x the CPU time")
    if not torch.cuda.is_available():
        print("(no CUDA device here: GPU vs CPU step time not measured)")


class TreeMemory:
    """Peak summed RSS of this process and all its descendants (from /proc), sampled.

    Reading every process's /proc entry is not free: sampled every 0.2 s it took
    about a sixth of the coordinator's process at 100 institutions, so once a second.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(os.getpid()))


def tree_rss_bytes(root: int) -> int:
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[pid] = int(statm[1]) * os.sysconf("SC_PAGE_SIZE")
    total, frontier = 0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while frontier:
        pid = frontier.pop()
        total += rss.get(pid, 0)
        frontier.extend(children.get(pid, []))
    return total


class PhaseClock:
    """Seconds spent in each phase the federation announces (start-up, census, summary, ...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._phase: str | None = None
        self._since = time.perf_counter()

    def on_phase(self, phase: str) -> None:
        self._close()
        self._phase = "rounds" if phase.startswith("round ") else phase
        self._since = time.perf_counter()

    def _close(self) -> None:
        if self._phase is not None:
            elapsed = time.perf_counter() - self._since
            self.seconds[self._phase] = self.seconds.get(self._phase, 0.0) + elapsed

    def on_run_start(self, start: object) -> None: ...

    def on_round_end(self, record: object) -> None: ...

    def on_run_end(self, result: object) -> None:
        self._close()
        self._phase = None

    def describe(self) -> str:
        return ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in self.seconds.items())


MODELS = {"fashion-mnist-small": "dpcnn", "digits": "cnn"}


def round_wall_time(
    institutions: int, *, rounds: int, fraction_fit: float, dataset: str
) -> tuple[float, int, str]:
    """Median wall time of rounds 2..N, the peak memory of the whole simulation, and the
    time of each phase."""
    scenario = Scenario(dataset=dataset, institutions=institutions, partition="iid")
    clock = PhaseClock()
    with TreeMemory() as memory:
        run_config = {
            "num-server-rounds": rounds,
            "secagg": True,
            "dp": True,
            "model": MODELS[dataset],
            "learning-rate": 1.0,
            "sample-rate": 0.2,
            "fraction-fit": fraction_fit,
            "profile": False,  # the reference profile runs once, after the rounds
        }
        outcome = simulate(
            scenario, prepare(scenario, run_config), baseline=False, observers=[clock]
        )
    durations = [r.duration_s for r in outcome.result.rounds[1:]]
    return statistics.median(durations), memory.peak_bytes, clock.describe()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--institutions", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-steps", action="store_true", help="Skip the step ratios.")
    parser.add_argument(
        "--dataset",
        choices=sorted(MODELS),
        default="fashion-mnist-small",
        help="fashion-mnist-small with the DP CNN (default), or digits with the 8x8 CNN.",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    if not args.skip_steps:
        print_step_ratios()
    if args.dataset.startswith("fashion") and not fashion_mnist_available():
        print("(Fashion-MNIST is missing: apt-get install dataset-fashion-mnist; no round times)")
        return
    described = {
        "fashion-mnist-small": "fashion-mnist-small (12,000 images, IID), dpcnn",
        "digits": "digits (1,797 images, IID), cnn",
    }[args.dataset]
    print(
        f"== s/round, {described}, SecAgg+ and DP-SGD, {os.cpu_count()} cores; "
        f"rounds 2..{args.rounds}"
    )
    for count in args.institutions:
        fraction = 0.1 if count >= 1000 else 1.0
        seconds, peak, phases = round_wall_time(
            count, rounds=args.rounds, fraction_fit=fraction, dataset=args.dataset
        )
        print(
            f"{count:>5} institutions (fraction-fit {fraction:g}): {seconds:7.2f} s per round, "
            f"peak memory of the simulation {peak / 2**30:5.2f} GiB\n"
            f"      phases: {phases}",
            flush=True,
        )


if __name__ == "__main__":
    main()
