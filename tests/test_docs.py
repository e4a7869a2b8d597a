"""The docs cannot drift from the code: every fenced shell block of the README and docs/ that is
marked `<!-- doc-test -->` runs here, in order per file, in a scratch directory that sees the
checkout's configs/ and tests/ (a block's `pip install` is the set-up already done); every
other block says why it does not run (`<!-- doc-test: skip (reason) -->`). And every entry
point behaves the same at its edges: --help, a bad flag, a missing workdir. Each `python -m`
command runs as a forked child of one interpreter with the libraries already imported
(tests/entry_points.py), so that it costs what the command does, not a start-up."""

import re
import shlex

import pytest

from tests.helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(
  r"([ \t]*<!-- doc-test(?P<skip>: skip \(.*?\))? -->\n)?[ \t]*```(?:bash|sh|shell)\n"
  r"(?P<body>.*?)```",
  re.S,
)


def _blocks(path):
  """(marker, commands) of each fenced shell block: marker 'run', 'skip' or None."""
  for m in BLOCK.finditer(path.read_text(encoding="utf-8")):
    marker = None if m.group(1) is None else "skip" if m.group("skip") else "run"
    body = m.group("body").replace("\\\n", " ")
    commands = [l.split(" #")[0].strip() for l in body.splitlines()]
    yield marker, [c for c in commands if c and not c.startswith("#")]


def test_every_shell_block_says_whether_it_runs():
  unmarked = [
    f"{p.relative_to(REPO)}: {cmds[:1]}"
    for p in DOCS
    for marker, cmds in _blocks(p)
    if marker is None
  ]
  assert not unmarked, (
    "mark these <!-- doc-test --> or <!-- doc-test: skip (why) -->:\n" + "\n".join(unmarked)
  )


def _runnable(command):
  """The command without a leading `pip install ... &&` (the suite's set-up did it)."""
  return re.sub(r"^pip install [^&]*&&\s*", "", command)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
  """One directory for every document's commands, as a reader's checkout: later documents
  find the README's runs (and its prepared data) there, as a reader would."""
  path = tmp_path_factory.mktemp("docs")
  for name in ("configs", "tests"):
    (path / name).symlink_to(REPO / name)
  return path


@pytest.mark.slow
@pytest.mark.xdist_group("docs")  # one worker, in order: the README first
@pytest.mark.parametrize(
  "doc", [p for p in DOCS if any(m == "run" for m, _ in _blocks(p))], ids=lambda p: p.name
)
def test_the_docs_commands_run(doc, scratch, entry_point):
  for marker, commands in _blocks(doc):
    for command in commands if marker == "run" else []:
      command = _runnable(command)
      if command.startswith("pip install"):
        continue
      argv = shlex.split(command)
      assert argv[:2] == ["python", "-m"], f"{doc.name}: run only `python -m` commands: {command}"
      proc = entry_point(argv[2], *argv[3:], cwd=scratch)
      assert proc.returncode == 0, (
        f"{doc.name}: {command}\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}"
      )


# ----------------------------------------------------------------------------- entry points

ENTRY_POINTS = [
  "pretrain.train",
  "pretrain.evaluate",
  "pretrain.generate",
  "pretrain.score",
  "pretrain.aot",
  "pretrain.checkpoints",
  "pretrain.convert",
  "input_pipeline.prepare",
  "launch.sweep",
]
# The flags that name where an entry point works, and a value that does not exist.
MISSING_WORKDIR = {
  "pretrain.evaluate": ["--workdir={missing}"],
  "pretrain.generate": ["--workdir={missing}", "--prompt=x"],
  "pretrain.score": ["--workdir={missing}", "--tasks_file=tests/fixtures/lm_eval/capitals.jsonl"],
  "pretrain.checkpoints": ["--workdir={missing}"],
  "pretrain.convert": ["to_hf", "--workdir={missing}", "--hf_dir={tmp}/out"],
  "launch.sweep": ["--sweepdir={missing}", "--report"],
}


@pytest.mark.slow
@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_entry_points_behave_the_same_at_their_edges(module, tmp_path, entry_point):
  helped = entry_point(module, "--help")
  assert helped.returncode == 0 and f"python -m {module}" in helped.stdout, helped.stderr[-1500:]
  bad = entry_point(module, "--no_such_flag=1")
  assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
  # (evaluate's flags come from the run's config: it asks for --workdir first)
  assert "no_such_flag" in bad.stderr or "--workdir: required" in bad.stderr, bad.stderr
  if module in MISSING_WORKDIR:
    missing = tmp_path / "no" / "such" / "run"
    args = [a.format(missing=missing, tmp=tmp_path) for a in MISSING_WORKDIR[module]]
    proc = entry_point(module, *args)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "error:" in proc.stderr, proc.stderr
    assert not missing.exists()


def test_readme_is_an_overview():
  assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
