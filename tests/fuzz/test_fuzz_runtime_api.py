"""The runtime API's line reader (lbcore/stats/cli_parser.py) on any
bytes: it never raises, and how the bytes are cut into reads never changes
the requests it returns."""

from hypothesis import given, strategies as st

from lbcore.stats.cli_parser import LineReader, split_commands

from .strategies import mutated, seeds, splits

SEEDS = seeds("runtime_api") + [b"show stat\n", b"set server a/b state ready\n", b"x <<\n\n"]
STREAMS = st.one_of(mutated(SEEDS), st.binary(max_size=300),
                    st.text(alphabet=" \t;\\<\nab/", max_size=60).map(str.encode))


@given(st.data())
def test_reads_cut_anywhere_give_the_same_requests(data):
    stream = data.draw(STREAMS)
    whole = LineReader().feed(stream)
    reader = LineReader()
    got = []
    for piece in data.draw(splits(stream)):
        got += reader.feed(piece)
    assert got == whole


@given(st.text(max_size=80))
def test_split_commands_takes_any_text(line):
    for words in split_commands(line):
        assert words and all(isinstance(w, str) for w in words)
