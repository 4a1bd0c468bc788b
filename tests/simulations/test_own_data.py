"""A federation of a consortium's own files: a folder of files, or one file split by a column."""

from __future__ import annotations

import json
import re

import pytest

from client.contract.errors import SchemaError
from privacy.errors import ConfigError
from simulations.own_data import OwnData
from simulations.scenario import Scenario


@pytest.fixture
def federation(tmp_path, small_schema, rows_factory):
    """Three institutions' CSVs (one semicolon-separated) and the consortium's schema."""
    folder = tmp_path / "hospitals"
    folder.mkdir()
    for seed, name in enumerate(("Aarhus", "Bologna", "Coimbra")):
        sep = ";" if name == "Bologna" else ","
        rows_factory(60 + 10 * seed, seed=seed).to_csv(folder / f"{name}.csv", index=False, sep=sep)
    (folder / "README.txt.bak").write_text("not data")
    schema = tmp_path / "schema.json"
    schema.write_text(small_schema.model_dump_json())
    return folder, schema


def test_a_folder_of_three_csvs_is_a_federation_of_three(federation):
    folder, schema = federation

    scenario = Scenario(own_data=OwnData(data=folder, schema_path=schema))
    institutions = scenario.all_institutions()

    assert scenario.num_institutions == 3
    assert [i.name for i in institutions] == ["Aarhus", "Bologna", "Coimbra"]
    assert [len(i.train) + len(i.test) for i in institutions] == [60, 70, 80]
    assert scenario.name == "small"
    config = scenario.node_config({"partition-id": 1})
    assert config["institution"] == "Bologna" and config["data-path"].endswith("Bologna.csv")


def test_a_broken_file_fails_naming_file_column_and_row(federation, rows_factory):
    folder, schema = federation
    rows = rows_factory(80, seed=2)
    rows.loc[4, "site"] = "z"
    rows.to_csv(folder / "Coimbra.csv", index=False)

    with pytest.raises(SchemaError) as caught:
        Scenario(own_data=OwnData(data=folder, schema_path=schema))

    message = str(caught.value)
    assert "Coimbra.csv: column 'site': unknown category 'z' at row 5" in message


def test_one_file_split_by_a_column(tmp_path, small_schema, rows_factory):
    rows = rows_factory(150)
    rows["region"] = ["north", "south", "east"] * 50
    rows.to_parquet(tmp_path / "all.parquet")
    schema = tmp_path / "schema.json"
    schema.write_text(small_schema.model_dump_json())

    own = OwnData(data=tmp_path / "all.parquet", schema_path=schema, split_by="region")
    scenario = Scenario(own_data=own)

    assert scenario.institution_names() == ["east", "north", "south"]
    assert own.check() == {"east": 50, "north": 50, "south": 50}
    assert all(len(i.train) + len(i.test) == 50 for i in scenario.all_institutions())


def test_a_missing_split_column_is_named(tmp_path, small_schema, small_rows):
    small_rows.to_csv(tmp_path / "all.csv", index=False)
    schema = tmp_path / "schema.json"
    schema.write_text(small_schema.model_dump_json())

    with pytest.raises(SchemaError, match=r"column 'hospital': is missing"):
        OwnData(data=tmp_path / "all.csv", schema_path=schema, split_by="hospital").check()


def test_a_folder_with_one_file_is_not_a_federation(tmp_path, small_schema, small_rows):
    small_rows.to_csv(tmp_path / "only.csv", index=False)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(small_schema.model_dump(mode="json")))

    with pytest.raises(ConfigError, match="holds 1 data file"):
        OwnData(data=tmp_path, schema_path=schema).check()


def test_cli_refuses_a_broken_folder_before_anything_starts(
    cli, federation, tmp_path, rows_factory
):
    folder, schema = federation
    rows = rows_factory(80, seed=2)
    rows.loc[1, "age"] = -3
    rows.to_csv(folder / "Coimbra.csv", index=False)

    code, output = cli("simulate", "--data", str(folder), "--schema", str(schema), "--out",
                       str(tmp_path / "out"))  # fmt: skip

    assert code == 4
    assert "Coimbra.csv: column 'age'" in output and "row 2" in output
    assert not (tmp_path / "out").exists()


def test_cli_client_check_validates_without_a_coordinator(cli, federation):
    folder, schema = federation

    ok_code, ok = cli("client", "check", "--data", str(folder / "Bologna.csv"), "--schema",
                      str(schema))  # fmt: skip
    bad_code, bad = cli("client", "check", "--data", str(folder / "Bologna.csv"), "--schema",
                        str(schema), "--delimiter", ",")  # fmt: skip

    assert ok_code == 0 and "70 rows match schema 'small'" in ok
    assert bad_code == 4 and "pass --delimiter ';'" in bad


def test_cli_refuses_an_out_folder_that_holds_a_run(cli, tmp_path):
    (tmp_path / "summary.json").write_text("{}")

    code, output = cli("simulate", "--out", str(tmp_path))

    assert code == 2 and "already holds a run" in output
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_cli_unknown_dataset_lists_the_known_ones(cli, tmp_path):
    code, output = cli("simulate", "--dataset", "mnist", "--out", str(tmp_path / "o"))

    assert code == 2
    assert "unknown dataset 'mnist'; choose one of: breast-cancer" in output
    assert "fashion-mnist" in output


@pytest.mark.parametrize("command", [["simulate"], ["client", "join"], ["client", "check"]])
def test_every_data_command_names_the_same_formats(cli, command):
    code, output = cli(*command, "--help")

    text = " ".join(output.split())
    assert code == 0
    assert all(word in text for word in ("CSV", "Parquet", "NPZ"))


@pytest.mark.slow
def test_cli_simulates_three_csvs_and_its_output_reads_well_in_a_file(cli, federation, tmp_path):
    folder, schema = federation
    out = tmp_path / "run"

    code, output = cli("simulate", "--data", str(folder), "--schema", str(schema), "--out",
                       str(out), "--rounds", "2", "--no-register")  # fmt: skip

    assert code == 0, output
    assert "\x1b[" not in output  # no colour or cursor codes in a file or pipe
    rounds = [line for line in output.splitlines() if re.match(r"round +\d/2 ", line)]
    assert len(rounds) == 2 and all("Aarhus" in line and "Coimbra" in line for line in rounds)
    for phase in ("start-up", "census", "summary", "round 1/2", "profile", "baseline"):
        assert f"… {phase}" in output
    assert (out / "summary.json").is_file()
