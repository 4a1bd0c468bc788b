from __future__ import annotations

import math

from privacy.ledger import LedgerRecord, PrivacyLedger


def entry(institution: str, round_: int, epsilon: float, **changes) -> LedgerRecord:
    values = dict(institution=institution, round=round_, steps=5, sample_rate=0.2,
                  noise_multiplier=4.0, max_grad_norm=1.0, epsilon=epsilon, delta=1e-5)
    values.update(changes)
    return LedgerRecord(**values)


def test_each_institution_round_appears_once_and_a_retry_replaces_it():
    ledger = PrivacyLedger([entry("A", 1, 0.4), entry("B", 1, 0.5), entry("A", 2, 0.6)])

    ledger.record(entry("A", 2, 0.7))  # round 2 retried after a restart

    assert [(e.institution, e.round) for e in ledger.entries()] == [("A", 1), ("B", 1), ("A", 2)]
    assert ledger.spent("A") == 0.7 and ledger.spent("B") == 0.5 and ledger.spent("C") == 0.0


def test_jsonl_round_trip_keeps_infinite_epsilon(tmp_path):
    ledger = PrivacyLedger([entry("A", 1, math.inf, noise_multiplier=0.0), entry("B", 1, 0.3, refused=True, reason="over")])
    path = tmp_path / "ledger.jsonl"

    ledger.write_jsonl(path)
    again = PrivacyLedger.read_jsonl(path)

    assert again.entries() == ledger.entries()
    assert '"epsilon": "inf"' in path.read_text()
    assert not (tmp_path / "ledger.jsonl.tmp").exists()


def test_every_release_has_its_own_entry_and_spent_is_the_composition_so_far():
    ledger = PrivacyLedger()
    ledger.record(entry("A", 0, 0.3, release="summary"))
    ledger.record(entry("A", 1, 0.6))
    ledger.record(entry("A", 1, 0.8, release="profile"))

    assert [e.release for e in ledger.entries("A")] == ["summary", "training", "profile"]
    assert ledger.spent("A") == 0.8
