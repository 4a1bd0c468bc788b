"""Privacy histories that survive: keyed by institution and data, pinned per run."""

from __future__ import annotations

import pytest
from flwr.app import RecordDict

from client.history import (
    FileHistory,
    can_spend,
    continuing_noise_multiplier,
    ensure_writable,
    file_fingerprint,
    history_file,
    settings_fingerprint,
    steps_before_run,
)
from privacy.accounting import AccountingStep, compute_epsilon, noise_multiplier_for
from privacy.errors import ConfigError

STEP = AccountingStep(noise_multiplier=1.2, sample_rate=0.1, steps=20)


def test_the_history_key_changes_with_the_data_file_and_the_schema(tmp_path, small_rows):
    data = tmp_path / "rows.csv"
    small_rows.to_csv(data, index=False)
    first = file_fingerprint(data, schema_fingerprint="s1")

    again = file_fingerprint(data, schema_fingerprint="s1")
    other_schema = file_fingerprint(data, schema_fingerprint="s2")
    small_rows.iloc[:-1].to_csv(data, index=False)  # one patient fewer
    changed = file_fingerprint(data, schema_fingerprint="s1")

    assert again == first
    assert len({first, other_schema, changed}) == 3
    assert history_file(tmp_path, institution="Cleveland", fingerprint=first) != history_file(
        tmp_path, institution="Cleveland", fingerprint=changed
    )


def test_history_files_are_named_by_institution_and_fingerprint(tmp_path):
    fingerprint = settings_fingerprint({"dataset": "wine", "seed": 0}, schema_fingerprint="s")

    path = history_file(tmp_path, institution="St. Mary's / north", fingerprint=fingerprint)

    assert path.parent == tmp_path
    assert path.name == f"St._Mary_s_north-{fingerprint[:16]}.jsonl"
    assert settings_fingerprint({"dataset": "wine", "seed": 1}, schema_fingerprint="s") != (
        fingerprint
    )


def test_an_unwritable_state_folder_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    with pytest.raises(ConfigError, match="not writable") as caught:
        ensure_writable(blocker / "node")

    assert caught.value.exit_code == 2
    assert ensure_writable(tmp_path / "new" / "node").is_dir()


def test_a_run_pins_what_was_spent_before_it_began(tmp_path):
    history = FileHistory(tmp_path / "h.jsonl")
    history.append(STEP)
    state = RecordDict()

    first = steps_before_run(history, state)
    history.append(STEP)  # the run's first round
    later = steps_before_run(history, state)
    next_run = steps_before_run(history, RecordDict())

    assert first == later == [STEP]
    assert next_run == [STEP, STEP]


def test_a_continuing_run_spends_its_epsilon_on_top_of_the_history():
    first_sigma = noise_multiplier_for(
        target_epsilon=1.0, target_delta=1e-5, sample_rate=0.1, steps=40
    )
    prior = (AccountingStep(noise_multiplier=first_sigma, sample_rate=0.1, steps=40),)
    spent = compute_epsilon(prior, delta=1e-5, accountant="prv")

    sigma = continuing_noise_multiplier(
        prior=prior,
        run_epsilon=1.0,
        budget_epsilon=3.0,
        target_delta=1e-5,
        sample_rate=0.1,
        steps=40,
        accountant="prv",
    )
    assert sigma is not None
    after = compute_epsilon(
        [*prior, AccountingStep(noise_multiplier=sigma, sample_rate=0.1, steps=40)],
        delta=1e-5,
        accountant="prv",
    )

    assert spent == pytest.approx(1.0, abs=0.01)
    assert after == pytest.approx(2.0, abs=0.01)
    assert after <= 2.0 + 1e-6


def test_a_spent_budget_leaves_nothing_for_another_run():
    sigma = noise_multiplier_for(target_epsilon=3.0, target_delta=1e-5, sample_rate=0.1, steps=40)
    prior = (AccountingStep(noise_multiplier=sigma, sample_rate=0.1, steps=40),)

    derived = continuing_noise_multiplier(
        prior=prior,
        run_epsilon=1.0,
        budget_epsilon=3.0,
        target_delta=1e-5,
        sample_rate=0.1,
        steps=40,
        accountant="prv",
    )

    assert derived is None
    assert not can_spend(epsilon_spent=2.995, epsilon_budget=3.0)
    assert can_spend(epsilon_spent=2.0, epsilon_budget=3.0)
