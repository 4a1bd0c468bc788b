"""A node whose rows change during a run sits the rest of it out, with the reason."""

from __future__ import annotations

import flwr.compat.common.recorddict_compat as compat
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.common import GetPropertiesIns
from flwr.common.constant import MessageTypeLegacy
from flwr.supercore.task_identity import TaskIdentity

from client.app import create_client_app
from client.contract.errors import DataChangedError


@pytest.fixture(autouse=True)
def _coordinator_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    # Messages built outside a running ServerApp need a run and node id.
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


def _census(context: Context) -> Message:
    """The census as a fresh ClientApp process (a deployment's fork per message) answers it."""
    message = Message(
        content=compat.getpropertiesins_to_recorddict(GetPropertiesIns(config={})),
        dst_node_id=context.node_id,
        message_type=MessageTypeLegacy.GET_PROPERTIES,
        group_id="census",
    )
    return create_client_app()(message, context)


def test_a_file_changed_between_messages_is_refused_with_the_reason(
    tmp_path, small_rows, small_schema
):
    data, schema = tmp_path / "cleveland.csv", tmp_path / "schema.json"
    small_rows.to_csv(data, index=False)
    schema.write_text(small_schema.model_dump_json())
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"data-path": str(data), "schema-path": str(schema), "budget-epsilon": 3.0},
        state=RecordDict(),
        run_config={},
    )

    first = _census(context)
    again = _census(context)  # the same rows, read again: no objection
    small_rows.iloc[:-1].to_csv(data, index=False)  # one row fewer

    with pytest.raises(DataChangedError, match="cleveland: the data changed since this run began"):
        _census(context)
    assert not first.has_error() and not again.has_error()
    small_rows.to_csv(data, index=False)  # restored: the run's rows again
    assert not _census(context).has_error()
    last = small_rows.iloc[-1]
    edits = {"age": 119.0 if last["age"] != 119 else 118.0, "site": "a" if last["site"] != "a" else "b"}
    for column, value in edits.items():  # one cell, numeric or categorical
        edited = small_rows.copy()
        edited.loc[edited.index[-1], column] = value
        edited.to_csv(data, index=False)
        with pytest.raises(DataChangedError):
            _census(context)
