"""The admin action: body parsing, validation, and the model changes it makes."""

import pytest

from lbcore.model import DRAIN, MAINT, READY
from lbcore.stats.admin import AdminAction, AdminError, parse_body, validate
from tests.unit.test_stats_snapshot import SPEC_SERVER_FIELDS, make_runtime


def status_of(call):
    with pytest.raises(AdminError) as info:
        call()
    return info.value.status


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1, 2]", b'"drain"', b"{}", b'{"stat": "drain"}', b'{"state": "drain", "x": 1}',
    b"\xff\xfe",
])
def test_bad_bodies_are_400(body):
    assert status_of(lambda: parse_body(body)) == 400


def test_good_bodies():
    assert parse_body(b'{"state": "drain"}') == ("drain", None)
    assert parse_body(b'{"weight": 5}') == (None, 5)
    assert parse_body(b'{"state": "ready", "weight": 0}') == ("ready", 0)


@pytest.mark.parametrize("state, weight", [
    ("down", None), ("", None), (1, None), (None, -1), (None, 257), (None, "5"), (None, True), (None, 2.5),
])
def test_bad_values_are_400(state, weight):
    assert status_of(lambda: validate(state, weight)) == 400


def test_values_map_to_the_model():
    assert validate("ready", None) == (READY, None)
    assert validate("DRAIN", 256) == (DRAIN, 256)
    assert validate("maint", 0) == (MAINT, 0)


def test_apply_changes_the_server_and_answers_its_row():
    runtime = make_runtime()
    action = AdminAction(lambda: runtime)
    ks1 = runtime.backends["keystone"].by_name["ks1"]
    row = action.apply("keystone", "ks1", "drain", None)
    assert ks1.admin == DRAIN and ks1 not in runtime.backends["keystone"].candidates
    assert row["status"] == "DRAIN" and SPEC_SERVER_FIELDS <= set(row)
    row = action.apply("keystone", "ks1", "ready", 3)
    assert (row["status"], row["weight"]) == ("UP", 3)
    assert ks1 in runtime.backends["keystone"].candidates
    row = action.apply("keystone", "ks1", None, 0)
    assert row["status"] == "NOLB"
    assert action.apply("keystone", "ks1", "maint", None)["status"] == "MAINT"


def test_apply_unknown_names_are_404_and_change_nothing():
    runtime = make_runtime()
    action = AdminAction(lambda: runtime)
    assert status_of(lambda: action.apply("nope", "ks1", "drain", None)) == 404
    assert status_of(lambda: action.apply("keystone", "nope", "drain", None)) == 404
    assert all(s.admin == READY for s in runtime.servers())


def test_apply_bad_value_changes_nothing():
    runtime = make_runtime()
    action = AdminAction(lambda: runtime)
    assert status_of(lambda: action.apply("keystone", "ks1", "drain", 999)) == 400
    assert runtime.backends["keystone"].by_name["ks1"].admin == READY


def test_apply_follows_a_swapped_runtime():
    runtimes = [make_runtime()]
    action = AdminAction(lambda: runtimes[-1])
    runtimes.append(make_runtime())
    action.apply("galera", "db1", "maint", None)
    assert runtimes[1].backends["galera"].by_name["db1"].admin == MAINT
    assert runtimes[0].backends["galera"].by_name["db1"].admin == READY
