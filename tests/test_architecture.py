"""The package's layers point one way, and `import ipguard_fast` stays light.

Every module belongs to a layer (LAYERS, lowest first). A module may import from its
own layer or any layer below, never above -- also inside functions, where a lazy
import would hide the same upward dependency -- and module-level imports form no
cycle. ARCHITECTURE.md describes the same layers.
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ipguard_fast"

LAYERS = [
    # 0: the ops, and leaf utilities that import nothing of the package's
    ["_extension", "_checks", "reference", "ops", "_atomic", "_validate", "_optional", "_hashing", "_version",
     "_files", "_progress", "_errors", "_startup", "binomial", "shuffle_test"],
    ["modules", "nn", "data", "data_files", "augment", "precision"],   # 1: helpers on a caller's module; layers; data sets
    ["fingerprint_fields", "fingerprints", "train", "search"],   # 2: the fingerprint set; the search; training
    ["verdict_threshold", "suspect_calls", "label_bias", "verdicts", "metrics"],   # 3: verdicts on objects (never a file); ARUC and ROC AUC
    ["io", "models"],                          # 4: files and formats into objects; architectures
    ["remote", "attacks"],                     # 5: the label-only HTTP API; the post-processing attacks
    ["selection"],                             # 6: fingerprint selection against reference models, protect
    ["evaluation"],                            # 7: suspects on beds, evaluate, reports (uses protect)
    ["cli", "bench"],                          # 8: the command line; the shipped benchmark
    ["__init__", "__main__"],                  # 9: the public API
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")[1:] or ["__init__"]
    for number, names in enumerate(LAYERS):
        if parts[0] in names:
            return number
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and to ARCHITECTURE.md")


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(module: str, top_level_only: bool, source: str | None = None) -> set[str]:
    """The package modules `module` imports (at top level, or anywhere in it)."""
    path = MODULES[module]
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from x import y`: y is a submodule, or else an attribute of x.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name.startswith("ipguard_fast") and name != module:
                found.add(name)
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    mine = layer_of(module)
    upward = sorted(m for m in imports_of(module, top_level_only=False)
                    if layer_of(m) > mine)
    assert not upward, f"{module} (layer {mine}) imports from a higher layer: {upward}"


def load_edges(module: str) -> set[str]:
    """Modules that importing `module` loads first: what it imports at top level, with their
    parent packages (Python imports a package before its submodules), except the packages
    `module` itself lives in, which are already loading when it runs."""
    own = {module.rsplit(".", n)[0] for n in range(module.count(".") + 1)}
    edges = set()
    for name in imports_of(module, top_level_only=True):
        parts = name.split(".")
        edges |= {".".join(parts[:n]) for n in range(1, len(parts) + 1)} - own
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = {m: load_edges(m) for m in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_cycle_check_can_fail():
    graph = {m: load_edges(m) for m in MODULES}
    graph["ipguard_fast.fingerprints"] = graph["ipguard_fast.fingerprints"] | {"ipguard_fast.search.engine",
                                                                               "ipguard_fast.search"}
    assert find_cycle(graph) is not None


def test_the_checker_sees_an_upward_import():
    """The direction test can fail: a lazy import of the CLI inside the engine is caught."""
    source = MODULES["ipguard_fast.search.engine"].read_text() + "\n\ndef f():\n    from ..cli import main\n"
    found = imports_of("ipguard_fast.search.engine", top_level_only=False, source=source)
    assert "ipguard_fast.cli" in found
    assert layer_of("ipguard_fast.cli") > layer_of("ipguard_fast.search.engine")


def test_import_is_light():
    """`import ipguard_fast` loads neither the evaluation's nor ONNX's dependencies."""
    code = ("import sys, json, ipguard_fast; "
            "print(json.dumps([m for m in ('matplotlib', 'sklearn', 'onnx', 'onnxruntime', 'torchattacks', "
            "'ipguard_fast.evaluation', 'ipguard_fast.cli', 'ipguard_fast.bench', 'ipguard_fast.remote') "
            "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_evaluate_loads_on_first_use():
    code = ("import sys, ipguard_fast; assert 'ipguard_fast.evaluation' not in sys.modules; "
            "f = ipguard_fast.evaluate; assert f.__module__ == 'ipguard_fast.evaluation.pipeline'; "
            "assert 'matplotlib' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"


# Thin keyword front ends over a config object: they may take a config's fields as keywords.
FRONT_ENDS = {
    "ipguard_fast.search.api.extract_fingerprints",      # ExtractConfig
    "ipguard_fast.selection.protect.protect",            # ProtectConfig
    "ipguard_fast.evaluation.pipeline.evaluate",         # EvaluationConfig
    "ipguard_fast.train.train_classifier",               # TrainRecipe
    "ipguard_fast.remote.server.serve",                  # ServeConfig, ServerLimits
    "ipguard_fast.remote.verification.verify_remote",    # RemoteVerifyConfig
}
# The boundary_adam_step_ op's schema (csrc/ipguard.cpp) has 12 arguments; its Python faces mirror it.
OP_SCHEMA_MIRRORS = {
    "ipguard_fast._checks.adam_args", "ipguard_fast.ops.boundary_adam_step_", "ipguard_fast.ops._",
    "ipguard_fast.reference.boundary_adam_step_", "ipguard_fast.reference._boundary_adam_step_",
}
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS = 300, 60, 10


def _functions(tree: ast.AST, prefix: str):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}.{node.name}", node


def _docstring_lines(node) -> int:
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def test_modules_and_functions_stay_small():
    """No module over 300 lines; no function over 60 lines (its docstring aside) or 10
    parameters (front ends excepted)."""
    too_long, too_big, too_many = [], [], []
    for module, path in MODULES.items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{module} ({len(source.splitlines())} lines)")
        for name, node in _functions(ast.parse(source), module):
            lines = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
            if lines > MAX_FUNCTION_LINES:
                too_big.append(f"{name} ({lines} lines)")
            a = node.args
            count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (a.args[:1] != [] and a.args[0].arg in
                                                                             ("self", "cls"))
            if count > MAX_PARAMETERS and name not in FRONT_ENDS | OP_SCHEMA_MIRRORS:
                too_many.append(f"{name} ({count} parameters)")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    assert not too_big, f"functions over {MAX_FUNCTION_LINES} lines: {too_big}"
    assert not too_many, f"functions over {MAX_PARAMETERS} parameters (not a front end over a config): {too_many}"
