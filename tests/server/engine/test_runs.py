"""Run configs are checked against the app's declared keys before anything is sent."""

from __future__ import annotations

import tomllib

import pytest

from privacy.errors import ConfigError
from server.engine.runs import (
    RunRecord,
    _toml,
    check_run_config,
    default_app_dir,
    load_run_config,
    new_record,
)
from server.errors import NotFoundError

APP = default_app_dir()


def test_a_flat_or_tabled_config_of_declared_keys_is_read(tmp_path):
    flat = tmp_path / "flat.toml"
    flat.write_text('num-server-rounds = 3\nsecagg = true\nstrategy = "fedavg"\n')
    tabled = tmp_path / "tabled.toml"
    tabled.write_text("[run]\nnum-server-rounds = 3\nsecagg = true\nstrategy = 'fedavg'\n")

    assert load_run_config(flat, app_dir=APP) == load_run_config(tabled, app_dir=APP)


def test_an_unknown_key_is_a_clear_error(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("num-server-rounds = 3\nnum-rounds = 3\n")

    with pytest.raises(ConfigError, match=r"unknown run config key.*num-rounds"):
        load_run_config(path, app_dir=APP)


def test_a_table_value_or_bad_toml_is_refused(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("num-server-rounds = = 3\n")

    with pytest.raises(ConfigError, match="not TOML"):
        load_run_config(path, app_dir=APP)
    with pytest.raises(ConfigError, match="string, number or boolean"):
        check_run_config({"seed": [1, 2]}, app_dir=APP)


def test_the_config_sent_to_flower_round_trips_through_toml():
    config = {"dp": True, "target-delta": 1e-5, "run-name": 'a "quoted" name', "seed": 3}

    assert tomllib.loads(_toml(config)) == config


def test_a_fresh_run_gets_an_id_and_cannot_ask_to_resume(tmp_path):
    record = new_record({"num-server-rounds": 2}, state_dir=tmp_path)
    record.flower_runs.append(42)
    record.save(tmp_path)

    assert len(record.run_id) == 36
    assert RunRecord.load(tmp_path, record.run_id) == record
    assert RunRecord.load(tmp_path, "42") == record  # by its Flower run id too
    with pytest.raises(NotFoundError):
        RunRecord.load(tmp_path, "nope")
    with pytest.raises(ConfigError, match="run resume"):
        new_record({"resume": True}, state_dir=tmp_path)


@pytest.mark.parametrize("run_id", ["../outside", "a/b", "", " x"])
def test_a_run_id_that_is_not_a_plain_name_is_refused(tmp_path, run_id):
    config = {"run-id": run_id} if run_id else {"run-id": "-x"}
    with pytest.raises(ConfigError, match="run-id"):
        new_record(config, state_dir=tmp_path)
    assert not (tmp_path / "outside.json").exists()


def test_starting_an_existing_run_again_is_refused_and_keeps_its_record(tmp_path):
    first = new_record({"run-id": "trial-1"}, state_dir=tmp_path)
    first.flower_runs.append(7)
    first.save(tmp_path)

    with pytest.raises(ConfigError, match="run resume trial-1"):
        new_record({"run-id": "trial-1"}, state_dir=tmp_path)
    assert RunRecord.load(tmp_path, "trial-1").flower_runs == [7]


def test_a_run_is_found_by_a_unique_prefix_of_its_id(tmp_path):
    for run_id in ("a74aff97-1111", "a74aff97-2222", "b0b0b0b0-3333"):
        RunRecord(run_id=run_id, config={}).save(tmp_path)

    assert RunRecord.load(tmp_path, "b0b0").run_id == "b0b0b0b0-3333"
    assert RunRecord.load(tmp_path, "a74aff97-2").run_id == "a74aff97-2222"
    with pytest.raises(ConfigError, match="more than one run"):
        RunRecord.load(tmp_path, "a74aff97")
    with pytest.raises(NotFoundError):
        RunRecord.load(tmp_path, "b0b")  # too short to name a run


def test_a_config_the_serverapp_would_refuse_is_refused_before_submission(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('strategy = "fedmedian"\nsecagg = true\n')

    with pytest.raises(ConfigError, match="fedmedian"):
        load_run_config(path, app_dir=APP)
    assert check_run_config({"strategy": "fedmedian", "secagg": False}, app_dir=APP)


def test_the_readmes_run_toml_is_a_valid_complete_config(tmp_path):
    readme = (APP / "README.md").read_text()
    block = readme.split("A complete `run.toml`")[1].split("```toml\n")[1].split("```")[0]
    path = tmp_path / "run.toml"
    path.write_text(block)

    config = load_run_config(path, app_dir=APP)

    assert config["num-server-rounds"] == 5 and config["secagg"] is True


def test_the_planned_rounds_are_read_where_the_recorder_writes_them():
    from client.contract.plan import TrainingPlan
    from server.engine.run_view import PLAN_ROUNDS_KEY, _num_rounds
    from server.store.models import Run

    plan = TrainingPlan(num_rounds=7).to_config()

    assert plan[PLAN_ROUNDS_KEY] == 7
    assert _num_rounds(Run(config={"plan": plan, "strategy": "fedavg"})) == 7
    assert _num_rounds(Run(config={"num-server-rounds": 4})) == 4
    assert _num_rounds(Run(config={})) is None


def test_the_phase_a_followed_run_is_in_follows_the_store():
    from server.engine.run_view import RunProgress, phase_of
    from server.run_events import RoundRecord

    def progress(status: str, done: int, planned: int | None = 3) -> RunProgress:
        rounds = [
            RoundRecord(
                round=r, loss=0.5, accuracy=0.7, accuracy_by_institution={}, epsilon={},
                participants=[],
            )
            for r in range(1, done + 1)
        ]  # fmt: skip
        return RunProgress(run_id="r", status=status, num_rounds=planned, rounds=rounds)

    assert phase_of(None) == "start-up"  # no ServerApp has recorded the run yet
    assert phase_of(progress("running", 0)) == "round 1/3"  # recorded after the summary
    assert phase_of(progress("running", 1)) == "round 2/3"
    assert phase_of(progress("running", 1, planned=None)) == "round 2/?"
    assert phase_of(progress("running", 3)) == "profile"
    assert phase_of(progress("failed", 2)) == "failed"
