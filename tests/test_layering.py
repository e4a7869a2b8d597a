"""The house's layers, read from the source with `ast` (stdlib only): arrows run one way, from
entry points to the library to input_pipeline / models to the ground modules, which import
nothing of the project; configs import the library and never the reverse; no import cycles;
no function-local imports of project modules; no folder of more than 8 modules."""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("pretrain", "models", "input_pipeline", "configs", "launch")
GROUND = "pretrain.ground"
# The library's subpackages of pretrain/ (the rest of pretrain/ are entry points).
LIBRARY_OF_PRETRAIN = ("devices", "evaluation", "objectives", "planning", "state", "training")


def _modules():
  """{module name: path} of every project module."""
  out = {}
  for package in PACKAGES:
    for path in sorted((REPO / package).rglob("*.py")):
      name = ".".join(path.relative_to(REPO).with_suffix("").parts)
      out[name.removesuffix(".__init__")] = path
  return out


MODULES = _modules()


def _imports(tree, name):
  """(line, imported project module, inside a function) for each import of `tree`."""
  parents = {}
  for node in ast.walk(tree):
    for child in ast.iter_child_nodes(node):
      parents[child] = node

  def in_function(node):
    while node in parents:
      node = parents[node]
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return True
    return False

  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      targets = [f"{node.module}.{a.name}" for a in node.names]
      targets = [t if t in MODULES else node.module for t in targets]
    elif isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    else:
      continue
    for target in targets:
      if target.split(".")[0] in PACKAGES and target != name:
        yield node.lineno, target, in_function(node)


GRAPH = {
  name: list(_imports(ast.parse(path.read_text(encoding="utf-8")), name))
  for name, path in MODULES.items()
}


def layer(name):
  """0 ground, 1 models / input_pipeline, 2 the library, 3 entry points, configs and launch."""
  parts = name.split(".")
  if name == GROUND or name.startswith(GROUND + "."):
    return 0
  if parts[0] in ("models", "input_pipeline"):
    return 1
  if parts[0] == "pretrain" and (len(parts) == 1 or parts[1] in LIBRARY_OF_PRETRAIN):
    return 2
  return 3


def test_arrows_run_one_way():
  """No module imports one of a higher layer; models and input_pipeline do not import each
  other."""
  wrong = []
  for name, imports in GRAPH.items():
    for line, target, _ in imports:
      if layer(target) > layer(name) or (
        layer(name) == layer(target) == 1 and name.split(".")[0] != target.split(".")[0]
      ):
        wrong.append(f"{MODULES[name].relative_to(REPO)}:{line} imports {target}")
  assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_library_never_imports_configs_or_launch():
  """Configs import the library, never the reverse (entry points may read configs)."""
  wrong = [
    f"{MODULES[name].relative_to(REPO)}:{line} imports {target}"
    for name, imports in GRAPH.items()
    if layer(name) <= 2
    for line, target, _ in imports
    if target.split(".")[0] in ("configs", "launch")
  ]
  assert not wrong, "\n".join(wrong)


def test_no_function_local_imports_of_project_modules():
  local = [
    f"{MODULES[name].relative_to(REPO)}:{line} imports {target}"
    for name, imports in GRAPH.items()
    for line, target, inside in imports
    if inside
  ]
  assert not local, "\n".join(local)


def test_no_import_cycles():
  graph = {n: {t for _, t, _ in imports if t in MODULES} for n, imports in GRAPH.items()}
  done, cycles = set(), []

  def visit(node, path):
    if node in path:
      cycles.append(path[path.index(node) :] + [node])
      return
    if node in done:
      return
    for target in sorted(graph[node]):
      visit(target, path + [node])
    done.add(node)

  for node in sorted(graph):
    visit(node, [])
  assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_folders_hold_at_most_8_modules(package):
  for folder in [REPO / package, *(p for p in (REPO / package).rglob("*") if p.is_dir())]:
    modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= 8 or folder.name == "__pycache__", (folder, len(modules))


def test_package_inits_do_nothing_at_import():
  """A package's __init__ holds its docstring only: importing a package changes nothing."""
  for path in MODULES.values():
    if path.name == "__init__.py":
      body = ast.parse(path.read_text(encoding="utf-8")).body
      assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body), path
