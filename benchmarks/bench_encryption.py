"""What encryption at rest costs: `fedwarden simulate` wall time, and service start per model.

1. ``fedwarden simulate`` (the default heart-disease federation unless told otherwise)
   runs ``--repeats`` times with encryption off and on, alternating, each in its own
   process; the best wall time of each is compared. The run's own sealing work
   (every checkpoint and the artifact, sealed with a fresh data key each) is also
   timed directly, since run-to-run noise on a shared machine is larger than it.
2. Service start per model: loading the run's registered model (read the artifact,
   decrypt it, check its SHA-256, create the onnxruntime session) is timed
   ``--loads`` times from the sealed artifact and from a plaintext copy of it.

    python benchmarks/bench_encryption.py [--repeats 2] [--rounds N] [--loads 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from client.contract.preprocessing import PreprocessingSpec
from deploy.predictor import LoadedModel
from privacy.keyring import EncryptionSettings, create_kek, load_keyring
from privacy.sealed_files import read_file
from server.store.engine import open_store
from server.store.models import Checkpoint, ModelVersion


def simulate(out: Path, *, keyring: Path | None, extra: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDWARDEN_")}
    if keyring is not None:
        env["FEDWARDEN_KEYRING"] = str(keyring)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "simulations.cli", "simulate", "--no-baseline", "--out", str(out),
         *extra],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--institutions", type=int, default=None)
    parser.add_argument("--loads", type=int, default=200)
    args = parser.parse_args()
    extra = [] if args.rounds is None else ["--rounds", str(args.rounds)]
    extra += [] if args.institutions is None else ["--institutions", str(args.institutions)]

    work = Path(tempfile.mkdtemp(prefix="fedwarden-bench-encryption-"))
    keyring_dir = work / "keyring"
    create_kek(keyring_dir)
    keyring = load_keyring(EncryptionSettings(keyring=keyring_dir))
    assert keyring is not None
    times: dict[str, list[float]] = {"off": [], "on": []}
    for repeat in range(args.repeats):
        for mode in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
            out = work / f"{mode}-{repeat}"
            seconds = simulate(out, keyring=keyring_dir if mode == "on" else None, extra=extra)
            times[mode].append(seconds)
            print(f"simulate, encryption {mode:3}: {seconds:6.1f} s", flush=True)
    off, on = min(times["off"]), min(times["on"])
    print(f"simulate wall time (best of {args.repeats}): off {off:.1f} s, on {on:.1f} s, "
          f"{100 * (on - off) / off:+.1f}%")  # fmt: skip

    store = open_store(f"sqlite:///{work / 'on-0' / 'fedwarden.db'}", keyring=keyring)
    with store.session() as session:
        blobs = list(session.scalars(select(Checkpoint.blob)))
        version = session.scalars(select(ModelVersion)).first()
        assert version is not None
        path, sha256 = Path(version.artifact_path), version.artifact_sha256
        spec = PreprocessingSpec.from_dict(version.preprocessing)
    store.dispose()
    plaintexts = [keyring.open(blob) for blob in blobs] + [read_file(path, keyring=keyring)]
    started = time.perf_counter()
    for plaintext in plaintexts:
        keyring.seal(plaintext)
    sealing = time.perf_counter() - started
    print(f"the run's own sealing: {len(plaintexts)} envelopes, "
          f"{sum(map(len, plaintexts)) / 1e6:.2f} MB, {1e3 * sealing:.2f} ms "
          f"({100 * sealing / on:.4f}% of the run)")  # fmt: skip

    plain = work / "plain.onnx"
    plain.write_bytes(read_file(path, keyring=keyring))
    loads: dict[str, list[float]] = {"plaintext": [], "sealed": []}
    for _ in range(args.loads):
        for mode, source, ring in (("plaintext", plain, None), ("sealed", path, keyring)):
            started = time.perf_counter()
            LoadedModel(name="bench", version=1, path=source, sha256=sha256, preprocessing=spec,
                        providers=["CPUExecutionProvider"], keyring=ring)  # fmt: skip
            loads[mode].append(time.perf_counter() - started)
    plain_ms = 1e3 * statistics.median(loads["plaintext"])
    sealed_ms = 1e3 * statistics.median(loads["sealed"])
    print(f"service start per model (median of {args.loads}): plaintext {plain_ms:.2f} ms, "
          f"sealed {sealed_ms:.2f} ms, {sealed_ms - plain_ms:+.2f} ms "
          f"({path.stat().st_size / 1e3:.1f} kB artifact)")  # fmt: skip
    print(f"(outputs in {work})")


if __name__ == "__main__":
    main()
