"""`[source] databases` and `{database}`: the config of each database of a fleet."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynasync import config, fleet
from dynasync.exceptions import ConfigError


def fleet_config(tmp_path: Path, **table: object) -> config.Config:
    entry = {"source": "users", "target": "app-{database}", **table}
    return config.parse({"source": {"databases": "tenants/*.db"}, "tables": [entry]}, tmp_path / "d.toml")


def test_the_glob_is_relative_to_the_config_and_skips_sqlites_side_files(tmp_path: Path) -> None:
    cfg = fleet_config(tmp_path)
    assert cfg.databases == str(tmp_path / "tenants" / "*.db")
    (tmp_path / "tenants").mkdir()
    for name in ("b.db", "a.db", "a.db-wal", "a.db-shm", "notes.txt"):
        (tmp_path / "tenants" / name).write_text("")
    (tmp_path / "tenants" / "dir.db").mkdir()
    assert [p.name for p in fleet.members(cfg)] == ["a.db", "b.db"]


def test_database_fills_targets_templates_and_constants(tmp_path: Path) -> None:
    cfg = fleet_config(tmp_path, partition_key={"name": "PK", "template": "T#{database}#{id}"},
                       attributes={"G": "{database}/{email}"}, constants={"tenant": "{database}", "n": 1})
    one = cfg.for_database(tmp_path / "tenants" / "acme.prod.db")
    (t,) = one.tables
    assert one.database == tmp_path / "tenants" / "acme.prod.db" and one.databases is None and one.fleet
    assert t.target == "app-acme.prod"
    assert t.partition_key is not None and t.partition_key.render({"id": "7"}) == "T#acme.prod#7"
    assert t.attributes[0].render({"email": "x"}) == "acme.prod/x"
    assert dict(t.constants) == {"tenant": "acme.prod", "n": 1}


def test_braces_in_a_database_name_are_literal_in_templates(tmp_path: Path) -> None:
    entry = {"source": "users", "target": "app", "partition_key": {"name": "PK", "template": "T#{database}#{id}"}}
    cfg = config.parse({"source": {"databases": "*.db"}, "tables": [entry]}, tmp_path / "d.toml")
    (t,) = cfg.for_database(tmp_path / "{id}.db").tables
    assert t.partition_key is not None and t.partition_key.fields == ("id",)
    assert t.partition_key.render({"id": "1"}) == "T#{id}#1"


def test_a_database_whose_name_makes_its_target_invalid_is_refused_alone(tmp_path: Path) -> None:
    cfg = fleet_config(tmp_path)
    with pytest.raises(ConfigError, match="not a valid DynamoDB table name") as e:
        cfg.for_database(tmp_path / "has space.db")
    assert "has space.db" in str(e.value)
    assert cfg.for_database(tmp_path / "fine.db").tables[0].target == "app-fine"


@pytest.mark.parametrize(("source", "message"), [
    ({"database": "a.db", "databases": "*.db"}, "cannot be set together"),
    ({"databases": ""}, "must be a glob"),
    ({}, "must be set"),
])
def test_source_needs_exactly_one_of_database_and_databases(
    tmp_path: Path, source: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse({"source": source, "tables": [{"source": "t", "target": "ttt"}]}, tmp_path / "d.toml")


def test_a_symlink_out_of_the_glob_directory_is_not_a_database(tmp_path: Path) -> None:
    cfg = fleet_config(tmp_path)
    (tmp_path / "tenants").mkdir()
    (tmp_path / "tenants" / "a.db").write_text("")
    (tmp_path / "elsewhere.db").write_text("")
    (tmp_path / "tenants" / "planted.db").symlink_to(tmp_path / "elsewhere.db")
    (tmp_path / "tenants" / "alias.db").symlink_to(tmp_path / "tenants" / "a.db")  # inside: kept
    assert [p.name for p in fleet.members(cfg)] == ["a.db", "alias.db"]


def test_databases_whose_names_would_mix_their_items_are_refused_and_say_why(tmp_path: Path) -> None:
    cfg = config.parse({"source": {"databases": "tenants/*/app.*"},
                        "tables": [{"source": "users", "target": "app-{database}"}]}, tmp_path / "d.toml")
    for tenant in ("acme", "globex"):
        (tmp_path / "tenants" / tenant).mkdir(parents=True)
        (tmp_path / "tenants" / tenant / "app.db").write_text("")
    (tmp_path / "tenants" / "solo").mkdir()
    (tmp_path / "tenants" / "solo" / "app.sqlite").write_text("")
    found = fleet.members(cfg)
    refused = fleet.clashes(cfg, found)
    assert sorted(refused) == found and all("'app' for 3 databases" in why for why in refused.values())
    assert all(isinstance(member, ConfigError) for _, member in fleet.configs(cfg))
    # Without {database}, the names do not matter.
    plain = config.parse({"source": {"databases": "tenants/*/app.*"},
                          "tables": [{"source": "users", "target": "shared"}]}, tmp_path / "d.toml")
    assert fleet.clashes(plain, found) == {}
