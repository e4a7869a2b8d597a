"""The PyTorch comparison's rounds: the order of the two sides alternates, so that a steady
drift in the machine's speed weighs on both alike."""

from benchmarks import rounds


def test_rounds_alternate_which_side_goes_first():
  calls = []
  pairs = rounds.paired_rounds(
    lambda r: calls.append(("ours", r)) or 10 * r, lambda r: calls.append(("theirs", r)) or -r, 4
  )
  assert pairs == [(10, -1), (20, -2), (30, -3), (40, -4)]
  assert calls == [
    ("ours", 1),
    ("theirs", 1),
    ("theirs", 2),
    ("ours", 2),
    ("ours", 3),
    ("theirs", 3),
    ("theirs", 4),
    ("ours", 4),
  ]


def test_the_summary_gives_the_median_and_range_of_the_ratios():
  assert rounds.ratio_summary([0.9, 1.3, 1.0]) == (
    "median 1.00 (min 0.90, max 1.30) of 3 rounds: 0.90, 1.30, 1.00"
  )
