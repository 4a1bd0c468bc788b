"""The coordinator's copy of the privacy ledger, kept from what institutions report."""

from __future__ import annotations

from pathlib import Path

from client.contract.report import FitReport
from privacy.ledger import LedgerEntry, PrivacyLedger
from server.records import RoundRecord, RunResult, RunStart

LEDGER_FILE = "ledger.jsonl"


def ledger_entry(report: FitReport) -> LedgerEntry:
    """The ledger entry for one institution's report of one round."""
    return LedgerEntry(
        institution=report.institution,
        round=report.round,
        steps=report.steps,
        sample_rate=report.sample_rate,
        noise_multiplier=report.noise_multiplier,
        max_grad_norm=report.max_grad_norm,
        epsilon=report.epsilon,
        delta=report.delta,
        refused=report.refused,
        reason=report.reason,
    )


class LedgerObserver:
    """Keeps the ledger as rounds end and rewrites ``ledger.jsonl`` in ``out_dir`` each time."""

    def __init__(self, out_dir: Path | None = None) -> None:
        self.ledger = PrivacyLedger()
        self.path = out_dir / LEDGER_FILE if out_dir is not None else None

    def on_run_start(self, start: RunStart) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_round_end(self, record: RoundRecord) -> None:
        for report in record.reports:
            self.ledger.record(ledger_entry(report))
        if self.path is not None:
            self.ledger.write_jsonl(self.path)

    def on_run_end(self, result: RunResult) -> None:
        if self.path is not None:
            self.ledger.write_jsonl(self.path)
