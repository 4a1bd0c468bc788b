"""Federated DP-SGD on Fashion-MNIST: test accuracy against ε, beside the published anchor.

Ten institutions (IID split of the 60,000 training images; each holds a third of
its share out for testing), the tanh/GroupNorm CNN (``dpcnn``), SecAgg+ on, each
institution's noise derived so that the whole run spends exactly its budget ε
(δ = 1e-5). The anchor: Tramèr & Boneh (2021), central DP-SGD, end-to-end CNN,
about 86% at ε ≈ 3 (their Table 1/Figure 1). Needs Debian's dataset-fashion-mnist.

    python benchmarks/bench_fashion_mnist.py [--epsilons 1 3 8] [--rounds 8]
        [--dataset fashion-mnist | fashion-mnist-small] [--sample-rate 0.05] [--local-epochs 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

from client.image_datasets import fashion_mnist_available
from privacy.config import PrivacyBudget
from simulations.runner import prepare, simulate
from simulations.scenario import Scenario

ANCHOR = "Tramèr & Boneh 2021, central DP-SGD, end-to-end CNN: ~86% at ε ≈ 3 (δ = 1e-5)"


def run(
    epsilon: float,
    *,
    dataset: str,
    institutions: int,
    rounds: int,
    lr: float,
    sample_rate: float,
    local_epochs: int,
) -> tuple[float, float]:
    scenario = Scenario(
        dataset=dataset,
        institutions=institutions,
        partition="iid",
        budget=PrivacyBudget(epsilon=epsilon, delta=1e-5),
    )
    began = time.perf_counter()
    run_config = {
        "num-server-rounds": rounds,
        "model": "dpcnn",
        "learning-rate": lr,
        "sample-rate": sample_rate,
        "local-epochs": local_epochs,
        "secagg": True,
        "profile": False,
    }
    outcome = simulate(scenario, prepare(scenario, run_config), baseline=False)
    accuracy = outcome.result.rounds[-1].accuracy
    assert accuracy is not None
    return accuracy, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--institutions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--sample-rate", type=float, default=0.05)
    parser.add_argument("--local-epochs", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if not fashion_mnist_available():
        raise SystemExit("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist")
    print(
        f"== {args.dataset}: {args.institutions} institutions (IID), dpcnn, {args.rounds} rounds "
        f"of {args.local_epochs} local epoch(s), Poisson rate {args.sample_rate:g}, "
        f"lr {args.lr:g}, SecAgg+, δ = 1e-5"
    )
    for epsilon in args.epsilons:
        accuracy, seconds = run(
            epsilon,
            dataset=args.dataset,
            institutions=args.institutions,
            rounds=args.rounds,
            lr=args.lr,
            sample_rate=args.sample_rate,
            local_epochs=args.local_epochs,
        )
        print(
            f"ε = {epsilon:g}: federated test accuracy {accuracy:.3f} ({seconds:.0f} s)", flush=True
        )
    print(f"anchor: {ANCHOR}")


if __name__ == "__main__":
    main()
