"""Training-side costs, measured in one run.

1. DP-SGD local training time divided by non-private local training time, for the
   same model, rows and steps (one institution's local round, repeated).
2. Wall time per federated round on Flower's simulation engine for 4, 20 and 100
   simulated institutions (digits, IID), the first round (Ray start-up) excluded.

    python benchmarks/bench_training.py [--institutions 4 20 100] [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from client.contract.plan import TrainingPlan
from client.contract.preprocessing import PreprocessingSpec
from client.models import build_model
from client.training import train_locally
from simulations.runner import prepare, simulate
from simulations.scenario import Scenario


def local_training_ratio(dataset: str, model: str, *, repeats: int) -> tuple[float, float]:
    """Median seconds of one local round with DP-SGD and without, on the first institution."""
    torch.set_num_threads(1)
    data = Scenario(dataset=dataset).all_institutions()[0]
    spec = PreprocessingSpec.fit(data.train, data.schema)
    features, labels = spec.transform(data.train), spec.labels(data.train)
    plan = TrainingPlan(model=model)
    timings: dict[str, list[float]] = {"dp": [], "plain": []}
    for repeat in range(repeats + 1):
        for kind, noise in (("dp", 1.0), ("plain", None)):
            network = build_model(plan.model_spec(spec), seed=0)
            began = time.perf_counter()
            train_locally(
                network,
                features,
                labels,
                epochs=1,
                learning_rate=0.5,
                sample_rate=0.2,
                noise_multiplier=noise,
                max_grad_norm=1.0,
                seed=repeat,
                device=torch.device("cpu"),
            )
            if repeat:  # the first pass warms caches and imports
                timings[kind].append(time.perf_counter() - began)
    return statistics.median(timings["dp"]), statistics.median(timings["plain"])


def round_wall_time(institutions: int, *, rounds: int, secagg: bool) -> float:
    """Median wall time of rounds 2..N (fit and federated evaluation) in one simulation."""
    scenario = Scenario(dataset="digits", institutions=institutions, partition="iid")
    outcome = simulate(
        scenario,
        prepare(scenario, {"num-server-rounds": rounds, "secagg": secagg, "model": "logreg", "learning-rate": 0.5}),
        baseline=False,
    )
    durations = [r.duration_s for r in outcome.result.rounds[1:]]
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--institutions", type=int, nargs="+", default=[4, 20, 100])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    print("== local training: DP-SGD vs non-private (same model, rows, steps; median of runs)")
    for dataset, model in (("heart-disease", "logreg"), ("digits", "cnn")):
        dp, plain = local_training_ratio(dataset, model, repeats=args.repeats)
        print(
            f"{dataset:>14} {model:>6}: DP-SGD {dp * 1e3:8.2f} ms, "
            f"plain {plain * 1e3:8.2f} ms, ratio {dp / plain:5.2f}x"
        )

    print("== wall time per round (digits, IID, logreg, SecAgg+ on; rounds 2.. of each run)")
    for count in args.institutions:
        seconds = round_wall_time(count, rounds=args.rounds, secagg=True)
        per = seconds / count * 1e3
        print(
            f"{count:>4} institutions: {seconds:7.2f} s per round ({per:7.1f} ms per institution)"
        )


if __name__ == "__main__":
    main()
