"""A scenario's institutions: their node configs and where their histories are kept."""

from __future__ import annotations

from client.history import FileHistory
from privacy.accounting import AccountingStep
from simulations.scenario import Scenario


def test_without_a_history_folder_nothing_is_kept():
    scenario = Scenario(dataset="heart-disease", institutions=2)

    config = scenario.node_config({"partition-id": 0})

    assert "history-path" not in config
    assert scenario.epsilon_spent(accountant="prv") == dict.fromkeys(
        scenario.institution_names(), 0.0
    )


def test_each_institution_and_partition_has_its_own_history_file(tmp_path):
    scenario = Scenario(dataset="wine", institutions=3, seed=0, history_dir=tmp_path)
    names = scenario.institution_names()

    paths = [scenario.history_path(name) for name in names]
    reseeded = Scenario(dataset="wine", institutions=3, seed=1, history_dir=tmp_path)
    resplit = Scenario(dataset="wine", institutions=4, seed=0, history_dir=tmp_path)
    again = Scenario(dataset="wine", institutions=3, seed=0, history_dir=tmp_path)

    assert len(set(paths)) == 3
    assert all(path is not None and path.parent == tmp_path for path in paths)
    assert scenario.node_config({"partition-id": 1})["history-path"] == str(paths[1])
    assert reseeded.history_path(names[0]) != paths[0]
    assert resplit.history_path(names[0]) != paths[0]
    assert again.history_path(names[0]) == paths[0]


def test_what_a_kept_history_holds_is_read_back(tmp_path):
    scenario = Scenario(dataset="heart-disease", institutions=2, history_dir=tmp_path)
    first, second = scenario.institution_names()
    path = scenario.history_path(first)
    assert path is not None
    FileHistory(path).append(AccountingStep(noise_multiplier=1.0, sample_rate=0.1, steps=50))

    spent = scenario.epsilon_spent(accountant="prv")

    assert spent[first] > 0
    assert spent[second] == 0.0
