"""A probe that lbcore could not even start (out of descriptors) says
nothing about the server: no result, so the server keeps its state."""

import errno

import pytest

from lbcore.health.probes import _connect_failure


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_no_descriptor_is_no_result(code):
    assert _connect_failure(OSError(code, "Too many open files"), 1.0) is None


def test_a_refused_connect_is_still_l4con():
    assert _connect_failure(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), 1.0).status == "L4CON"
