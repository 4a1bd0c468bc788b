"""The coordinator's copy of the privacy ledger, kept from what institutions report."""

from __future__ import annotations

from pathlib import Path

from privacy.ledger import PrivacyLedger
from server.run_events import RoundRecord, RunResult, RunStart

LEDGER_FILE = "ledger.jsonl"


class LedgerObserver:
    """Keeps the ledger as rounds end and rewrites ``ledger.jsonl`` in ``out_dir`` each time."""

    def __init__(self, out_dir: Path | None = None) -> None:
        self.ledger = PrivacyLedger()
        self.path = out_dir / LEDGER_FILE if out_dir is not None else None

    def on_run_start(self, start: RunStart) -> None:
        for report in start.summary_reports:
            self.ledger.record(report.to_ledger_record(release="summary"))
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.ledger.write_jsonl(self.path)

    def on_round_end(self, record: RoundRecord) -> None:
        for report in record.reports:
            self.ledger.record(report.to_ledger_record())
        if self.path is not None:
            self.ledger.write_jsonl(self.path)

    def on_run_end(self, result: RunResult) -> None:
        for report in result.profile_reports:
            self.ledger.record(report.to_ledger_record(release="profile"))
        if self.path is not None:
            self.ledger.write_jsonl(self.path)
