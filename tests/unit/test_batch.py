"""WriteBatch: members added during a turn of the loop are flushed once,
together, by one callback at the end of the turn."""

from lbcore.batch import WriteBatch


class Loop:
    """Records call_soon; `turn()` runs what was scheduled, as the loop would."""

    def __init__(self):
        self.soon = []

    def call_soon(self, callback, *args):
        self.soon.append((callback, args))

    def turn(self):
        ready, self.soon = self.soon, []
        for callback, args in ready:
            callback(*args)


class Member:
    def __init__(self, log, name, fail=False):
        self.log, self.name, self.fail = log, name, fail

    def flush(self):
        self.log.append(self.name)
        if self.fail:
            raise OSError("broken")


def test_one_callback_per_turn_flushes_every_member_in_order():
    loop, log = Loop(), []
    batch = WriteBatch(loop)
    a, b = Member(log, "a"), Member(log, "b")
    batch.add(a)
    batch.add(b)
    assert len(loop.soon) == 1 and log == []
    loop.turn()
    assert log == ["a", "b"]
    assert batch.members == [] and not batch.scheduled


def test_a_member_added_after_the_flush_gets_the_next_turn():
    loop, log = Loop(), []
    batch = WriteBatch(loop)
    batch.add(Member(log, "a"))
    loop.turn()
    batch.add(Member(log, "b"))
    assert len(loop.soon) == 1
    loop.turn()
    assert log == ["a", "b"]


def test_a_failing_member_does_not_strand_the_others(caplog):
    loop, log = Loop(), []
    batch = WriteBatch(loop)
    batch.add(Member(log, "a", fail=True))
    batch.add(Member(log, "b"))
    loop.turn()
    assert log == ["a", "b"]
    assert "flushing a connection's output failed" in caplog.text
