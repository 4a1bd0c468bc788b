"""What SecAgg+ costs: per-round wall time with it divided by without, in one run.

Digits split IID across N institutions, logistic regression, DP-SGD on; each
setting is one simulation whose first round (Ray start-up) is excluded.

    python benchmarks/bench_secagg.py [--institutions 4 10 50] [--rounds 4]
"""

from __future__ import annotations

import argparse
import warnings

from bench_training import round_wall_time  # runs as a script beside bench_training.py


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--institutions", type=int, nargs="+", default=[4, 10, 50])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print("institutions  plain s/round  SecAgg+ s/round  ratio")
    for count in args.institutions:
        plain = round_wall_time(count, rounds=args.rounds, secagg=False)
        secure = round_wall_time(count, rounds=args.rounds, secagg=True)
        print(f"{count:>12}  {plain:13.2f}  {secure:15.2f}  {secure / plain:5.2f}x")


if __name__ == "__main__":
    main()
