"""The strict request checks (lbcore/proxy/h1_checks.py) on any byte
stream: no exception, the same verdict however the stream is cut into
reads, and the same message boundaries as llhttp wherever both accept."""

import httptools
from hypothesis import given, strategies as st

from lbcore.proxy.h1_checks import RequestChecker

from .strategies import request_streams, splits


class _Counter:
    def __init__(self):
        self.complete = 0

    def on_message_complete(self):
        self.complete += 1


@given(st.data())
def test_reads_cut_anywhere_give_the_same_verdict(data):
    stream = data.draw(request_streams())
    whole = RequestChecker(16384)
    verdict = whole.feed(stream)[0]
    cut = RequestChecker(16384)
    got = 0
    for piece in data.draw(splits(stream)):
        got = cut.feed(piece)[0]
        if got:
            break
    assert got == verdict
    if not verdict:
        assert cut.messages == whole.messages


@given(request_streams())
def test_message_boundaries_agree_with_llhttp(stream):
    checker = RequestChecker(16384)
    status, _ = checker.feed(stream)
    if status:
        return
    counter = _Counter()
    try:
        httptools.HttpRequestParser(counter).feed_data(stream)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return  # llhttp refuses it: the request is refused either way
    # llhttp counts an upgrade's end (or none): what matters is that the
    # checker never sees more messages in the stream than llhttp does, which
    # would mean it judged bytes llhttp reads as a body, or the reverse.
    assert checker.messages == counter.complete
