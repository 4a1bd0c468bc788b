"""Every message a node sends is on the release manifest: the mod's check, the contract's keys,
and a real run on Flower's simulation engine walked message by message."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from client.contract.report import FitReport
from client.contract.wire import _CENSUS_KEYS, TASK_KEY
from client.mods import check_outgoing, release_manifest_mod
from privacy.errors import UndeclaredReleaseError
from privacy.releases import GET_PROPERTIES, TRAIN, release_for


def _fit_message(task: str) -> Message:
    ins = FitIns(ndarrays_to_parameters([np.zeros(3)]), {TASK_KEY: task})
    return Message(
        content=compat.fitins_to_recorddict(ins, keep_input=True),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )


def _fit_reply(msg: Message, metrics: dict) -> Message:
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.zeros(3)]), 10, metrics)
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


def _report() -> dict:
    return FitReport(institution="A", round=1).to_metrics()


@pytest.fixture
def task_identity(monkeypatch):
    # A Message needs Flower's task identity, as inside a ClientApp process.
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


def test_the_mod_stops_a_reply_with_an_undeclared_key(task_identity):
    msg = _fit_message("train")
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})

    passed = release_manifest_mod(msg, context, lambda m, c: _fit_reply(m, _report()))
    assert passed.content is not None
    with pytest.raises(UndeclaredReleaseError, match=r"fw\.positive_count"):
        release_manifest_mod(
            msg, context, lambda m, c: _fit_reply(m, {**_report(), "fw.positive_count": 31})
        )


def test_the_manifest_declares_the_contracts_keys():
    census = release_for(message_type=GET_PROPERTIES, task=None)
    update = release_for(message_type=TRAIN, task="train")

    assert set(census.fields) == set(_CENSUS_KEYS.values())
    assert set(update.fields) == {f"fw.{f.name}" for f in dataclasses.fields(FitReport)}


# ---------------------------------------------------------------------- a real run


class OutgoingRecorder:
    """A client mod (outermost) that writes down every reply a node sends; picklable for Ray."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)

    def __call__(self, msg: Message, ctxt: Context, call_next):
        reply = call_next(msg, ctxt)
        entry: dict = {
            "type": msg.metadata.message_type,
            "records": sorted(reply.content.keys()) if not reply.has_error() else [],
            "error": reply.error.reason if reply.has_error() else None,
            "secagg": RECORD_KEY_CONFIGS in reply.content.config_records
            if not reply.has_error()
            else False,
        }
        if not reply.has_error():
            try:
                entry["kind"] = check_outgoing(msg, reply).kind
                entry["verdict"] = "declared"
            except UndeclaredReleaseError as exc:
                entry["verdict"] = f"undeclared: {exc}"
            except Exception as exc:  # a SecAgg+ stage message has no legacy reply
                entry["verdict"] = f"unparsed: {type(exc).__name__}"
            if "fitres.metrics" in reply.content.metric_records or "fitres.metrics" in reply.content.config_records:
                fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
                entry["metrics"] = {
                    k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in fitres.metrics.items()
                }
                entry["num_examples"] = fitres.num_examples
        path = Path(self.folder) / f"{ctxt.node_id}.jsonl"
        with path.open("a") as handle:
            handle.write(json.dumps(entry, default=str) + "\n")
        return reply


@pytest.mark.slow
def test_every_message_of_a_real_secure_run_is_declared(tmp_path):
    from simulations.runner import prepare, simulate
    from simulations.scenario import Scenario

    scenario = Scenario(institutions=3, seed=3)
    settings = prepare(scenario, {"num-server-rounds": 1, "secagg": True})

    outcome = simulate(
        scenario, settings, baseline=False, client_mods=[OutgoingRecorder(tmp_path)]
    )

    entries = [
        json.loads(line)
        for path in sorted(tmp_path.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    # a normal secure round, every node's guard on: all three take part, none is
    # dropped or rejected, and the SecAgg+ timeout is finite
    (record,) = outcome.result.rounds
    assert record.aggregated and len(record.participants) == 3
    assert record.secagg is not None and math.isfinite(record.secagg["timeout_s"])
    assert not record.dropped and not record.rejected
    assert entries
    for entry in entries:
        if entry["error"] is not None:
            continue  # a refusal: its reason only
        if entry["secagg"]:
            # SecAgg+'s own stages: Flower's protocol record, and in the masked-vector stage
            # the report (checked below) with its arrays cleared.
            assert set(entry["records"]) <= {
                RECORD_KEY_CONFIGS, "fitres.metrics", "fitres.num_examples",
                "fitres.parameters", "fitres.status",
            }, entry
        else:
            assert entry["verdict"] == "declared", entry
        if "metrics" in entry:
            report = release_for(message_type=TRAIN, task="train")
            assert set(entry["metrics"]) <= set(report.fields), entry
            assert entry["metrics"].get("fw.train_loss") is None  # NaN: never a number
    seen = {e.get("kind") for e in entries if not e["secagg"]}
    assert {"census", "initial-model"} <= seen
    # the summary, the update, the evaluation and the profile each reach SecAgg+'s
    # masked-vector stage on all three nodes, their reports checked above
    assert sum(e["secagg"] and "metrics" in e for e in entries) >= 4 * 3
