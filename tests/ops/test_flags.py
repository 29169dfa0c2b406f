"""Feature flags: sources and precedence, reload without restart, bad files, and the gates."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from index_builder.engine.definitions import parse_definition
from index_builder.engine.weighting import WEIGHTINGS
from index_builder.errors import ConflictError, InvalidInputError
from index_builder.ingest.job import run_ingestion
from index_builder.ops.flags import FlagStore, check_definition, definition_gates
from index_builder.services.builds import IndexBuilder
from index_builder.services.catalog import add_definition
from index_builder.storage.duckdb.store import DuckDBStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_defaults_env_and_file_in_that_order(tmp_path: Path) -> None:
    assert FlagStore().current.async_builds is True
    assert FlagStore().current.weighting_sqrt_market_cap is False
    env = '{"async_builds": false, "methodology_part2": false}'
    path = tmp_path / "flags.yaml"
    path.write_text("methodology_part2: true\n")
    flags = FlagStore(env, path)
    assert flags.current.async_builds is False  # env
    assert flags.current.methodology_part2 is True  # the file wins over env
    sources = {f["name"]: f["source"] for f in flags.describe()}
    assert sources == {
        "async_builds": "env",
        "methodology_part2": "file",
        "weighting_sqrt_market_cap": "default",
        "shadow_storage": "default",
    }


def test_a_changed_file_is_picked_up_after_the_reload_interval(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text('{"async_builds": true}')
    clock = FakeClock()
    flags = FlagStore(path=path, reload_seconds=5, clock=clock)
    path.write_text('{"async_builds": false, "weighting_sqrt_market_cap": true}')
    clock.now = 4.9
    assert flags.enabled("async_builds") is True  # not checked yet
    clock.now = 5.0
    assert flags.enabled("async_builds") is False
    assert flags.enabled("weighting_sqrt_market_cap") is True
    path.unlink()  # no file: back to the defaults
    clock.now = 10.0
    assert flags.enabled("async_builds") is True


def test_an_invalid_file_keeps_the_last_good_flags_and_degrades_health(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("async_builds: false\n")
    flags = FlagStore(path=path, reload_seconds=0)
    assert flags.health()["status"] == "ok"
    with caplog.at_level(logging.ERROR, logger="index_builder.ops.flags"):
        path.write_text("async_builds: sometimes\nnot_a_flag: 1\n")
        assert flags.enabled("async_builds") is False  # the last good value
        flags.reload()
        flags.reload()
    health = flags.health()
    assert health["status"] == "degraded" and "async_builds" in str(health["error"])
    assert len([r for r in caplog.records if "not reloaded" in r.getMessage()]) == 1
    path.write_text("- a list\n")
    flags.reload()
    assert "mapping" in str(flags.health()["error"])
    path.write_text("async_builds: true\n")
    assert flags.enabled("async_builds") is True and flags.health()["status"] == "ok"


@pytest.mark.parametrize("env", ['{"async_builds": "maybe"}', "[1]", "{not json", '{"x": 1}'])
def test_a_bad_environment_value_is_refused_at_start(env: str) -> None:
    with pytest.raises(InvalidInputError, match="INDEX_BUILDER_FLAGS"):
        FlagStore(env)


def _definition(**fields: object) -> object:
    return parse_definition({"id": "t", "name": "t", "top_n": 5, **fields})


@pytest.mark.parametrize(
    ("fields", "flag"),
    [
        ({"buffer": {"entry_rank": 4, "exit_rank": 6}}, "methodology_part2"),
        ({"effective_lag": 1}, "methodology_part2"),
        ({"rank_by": "company"}, "methodology_part2"),
        ({"return_type": "price"}, "methodology_part2"),
        ({"tax": 0.15}, "methodology_part2"),
        (
            {
                "weighting": "capped_market_cap",
                "cap": 0.3,
                "group_cap": {"threshold": 0.2, "limit": 0.5},
            },
            "methodology_part2",
        ),
        ({"weighting": "sqrt_market_cap"}, "weighting_sqrt_market_cap"),
    ],
)
def test_definitions_name_the_flags_they_need(fields: dict[str, object], flag: str) -> None:
    definition = _definition(**fields)
    assert [name for name, _ in definition_gates(definition)] == [flag]  # type: ignore[arg-type]
    off = FlagStore(f'{{"{flag}": false}}')
    with pytest.raises(ConflictError, match=flag):
        check_definition(off, definition)  # type: ignore[arg-type]
    check_definition(FlagStore(f'{{"{flag}": true}}'), definition)  # type: ignore[arg-type]
    check_definition(None, definition)  # type: ignore[arg-type]


def test_a_part_1_definition_needs_no_flag() -> None:
    assert definition_gates(_definition(weighting="market_cap", rebalance="monthly")) == []  # type: ignore[arg-type]


def test_sqrt_market_cap_weights_by_hand() -> None:
    definition = _definition(weighting="sqrt_market_cap")
    caps = np.array([[400.0, 100.0, 0.0], [9.0, 16.0, 25.0]])
    present = np.array([[True, True, False], [True, True, True]])
    weights = WEIGHTINGS.get("sqrt_market_cap").weights(caps, present, definition).values  # type: ignore[arg-type]
    np.testing.assert_allclose(weights, [[2 / 3, 1 / 3, 0.0], [3 / 12, 4 / 12, 5 / 12]])


def test_services_refuse_switched_off_definitions(store: DuckDBStore) -> None:
    run_ingestion(store, "synthetic", {"symbols": 60, "days": 10})
    off = FlagStore('{"methodology_part2": false}')
    with pytest.raises(ConflictError, match="methodology_part2"):
        add_definition(store, _definition(effective_lag=2), flags=off)  # type: ignore[arg-type]
    assert store.get_definition("t") is None
    builder = IndexBuilder(store, store.calendar, off)
    # the switched-off index is refused as its own outcome; the other one is built
    built, refused = builder.build(["ew100", "ew100-buffer"])
    assert (built.index_id, built.outcome) == ("ew100", "built")
    assert (refused.index_id, refused.outcome) == ("ew100-buffer", "failed")
    assert isinstance(refused.error, ConflictError)
    assert "ew100-buffer: buffer" in refused.error.message and refused.error.field
    assert store.build_state("ew100-buffer") is None
    assert set(builder.switched_off(["ew100", "ew100-buffer", "mcap50-ucits"])) == {
        "ew100-buffer",
        "mcap50-ucits",
    }
    assert [r.index_id for r in builder.build(["ew100"])] == ["ew100"]
