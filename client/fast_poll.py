"""``python -m client.fast_poll``: Flower's ``flower-supernode``, polling with a back-off.

What ``fedwarden client join`` starts: the seam of ``client.contract.polling`` is
installed (the SuperNode's idle poll waits 50 ms doubling to 1 s instead of 3 s,
and its wait for its ClientApp's reply 50 ms instead of 0.5 s; with ``--wake FIFO``
each stored message wakes the executor at once), then Flower's own
``flower-supernode`` entry runs with the remaining arguments::

    python -m client.fast_poll [--poll-first-s 0.05] [--poll-max-s 1] [--wake FIFO] \
        FLOWER-SUPERNODE-ARGS
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from client.contract.polling import (
    WakeChannel,
    add_poll_args,
    install_object_pull_backoff,
    install_supernode_poll,
    poll_settings,
)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m client.fast_poll [--poll-first-s S] [--poll-max-s S] FLOWER-SUPERNODE-ARGS``."""
    parser = argparse.ArgumentParser(
        prog="python -m client.fast_poll",
        description="Flower's flower-supernode, polling with a back-off instead of every 3 s.",
    )
    add_poll_args(parser)
    parser.add_argument(
        "--wake", metavar="FIFO", help="Write to this FIFO when a message is stored."
    )
    ours, theirs = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    wake = WakeChannel(ours.wake) if ours.wake else None
    install_supernode_poll(poll_settings(ours), wake=wake)
    install_object_pull_backoff()
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *theirs]
    flower_supernode()


if __name__ == "__main__":
    main()
