"""Side-by-side measurements repeated in alternating order, and their ratios summed up.

On a shared or virtual machine one side's speed can drift by 10-20% within minutes: a single
pair's ratio carries that drift, and pairs in alternating order cancel a steady one.
"""

import statistics


def paired_rounds(ours, theirs, rounds):
  """[(ours(r), theirs(r))] for r = 1..rounds: ours first in odd rounds, theirs in even ones."""
  pairs = []
  for r in range(1, rounds + 1):
    if r % 2:
      a = ours(r)
      b = theirs(r)
    else:
      b = theirs(r)
      a = ours(r)
    pairs.append((a, b))
  return pairs


def ratio_summary(ratios):
  """'median M (min a, max b) of n rounds: r1, r2, ...' of ours/theirs throughput ratios."""
  listed = ", ".join(f"{r:.2f}" for r in ratios)
  return (
    f"median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max "
    f"{max(ratios):.2f}) of {len(ratios)} rounds: {listed}"
  )
