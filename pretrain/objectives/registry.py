"""Every objective by name: pretraining's and the fine-tuning tasks'."""

from pretrain.objectives import pretraining, tasks


def all_objectives():
  """Pretraining's objectives and the fine-tuning tasks' (pretrain/objectives/tasks.py)."""
  return {**pretraining.OBJECTIVES, **tasks.OBJECTIVES}


def get(name):
  known = all_objectives()
  if name not in known:
    raise ValueError(f"config.objective: unknown {name!r}; choose one of {', '.join(known)}")
  return known[name]
