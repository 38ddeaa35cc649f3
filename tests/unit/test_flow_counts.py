"""health's flow_evictions reads the flow table's inserts and its live
entries one after the other while the datapath inserts: settled_counts
makes the two readings agree."""

from acctd.daemon.core import settled_counts


class Table:
    """A flow table whose datapath inserts `during[i]` flows while the
    i-th walk of it runs (the walk sees them)."""

    def __init__(self, during: list[int]):
        self.inserted = self.live_now = 10
        self.during, self.walks = during, 0

    def new(self) -> int:
        return self.inserted

    def live(self) -> int:
        k = self.during[self.walks] if self.walks < len(self.during) else 0
        self.walks += 1
        self.inserted += k
        self.live_now += k
        return self.live_now


def test_a_flow_inserted_during_the_walk_is_walked_again():
    t = Table([1])          # one insert while the first walk runs
    assert (t.new(), t.live()) == (10, 11)      # read once each: one flow too many
    t = Table([1])
    new, live = settled_counts(t.new, t.live)
    assert (new, live) == (11, 11) and t.walks == 2


def test_a_quiet_table_is_walked_once():
    t = Table([])
    assert settled_counts(t.new, t.live) == (10, 10) and t.walks == 1


def test_a_table_that_keeps_growing_is_off_by_one_walks_inserts_at_most():
    t = Table([2] * 10)
    new, live = settled_counts(t.new, t.live, tries=5)
    assert t.walks == 5 and abs(live - new) <= 2
