"""The worker's modules (trt_build, trt_run, cuda_buffers, worker) stay loadable by JetPack 5's
Python 3.8, without the rest of Fovea (``make lint`` runs this, beside ``vermin``).

ruff parses the file as Python 3.8 (``per-file-target-version``); these checks cover what a parser
cannot see: imports, annotations evaluated at runtime, and standard-library calls newer than 3.8.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import edge_agent.runtime.trt_build as trt_build

SOURCE = Path(trt_build.__file__)
PY38_MODULES = ("trt_build", "trt_run", "cuda_buffers", "worker")
"""What the inference worker loads under JetPack's Python: ``make lint`` checks them as 3.8."""
SOURCES = [SOURCE.with_name(f"{name}.py") for name in PY38_MODULES]
ALLOWED_THIRD_PARTY = {"numpy", "tensorrt", "onnxruntime", "cuda", "pycuda"}
"""Imported inside the function that needs them (numpy: anywhere)."""
SIBLINGS = {f"edge_agent.runtime.{name}" for name in PY38_MODULES}
"""The worker's own modules, which import each other by these names."""
NEWER_THAN_38 = {
    "removeprefix",  # 3.9
    "removesuffix",  # 3.9
    "is_relative_to",  # 3.9
    "with_stem",  # 3.9
    "readlink",  # Path.readlink, 3.9
    "bit_count",  # 3.10
    "pairwise",  # 3.10
    "file_digest",  # 3.11
    "batched",  # 3.12
    "cache",  # functools.cache, 3.9
}
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


@pytest.fixture(params=SOURCES, ids=PY38_MODULES)
def source(request: pytest.FixtureRequest) -> Path:
    return Path(request.param)


def _tree(source: Path) -> ast.Module:
    return ast.parse(source.read_text(), filename=str(source), feature_version=(3, 8))


def _annotation_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside annotations (lazy under ``from __future__ import annotations``)."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(n) for root in roots for n in ast.walk(root)}


def test_module_has_lazy_annotations(source: Path) -> None:
    first = next(n for n in _tree(source).body if isinstance(n, ast.ImportFrom))
    assert first.module == "__future__" and first.names[0].name == "annotations"


def test_imports_only_the_standard_library_and_tensorrt_lazily(source: Path) -> None:
    tree = _tree(source)
    top_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"line {node.lineno}: relative import"
            names = [node.module or ""]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root in sys.stdlib_module_names or root == "__future__" or name in SIBLINGS:
                continue
            assert root in ALLOWED_THIRD_PARTY, f"line {node.lineno}: imports {name}"
            assert root == "numpy" or id(node) not in top_level, (
                f"line {node.lineno}: {name} must be imported inside the function that needs it"
            )


def test_no_runtime_pep604_or_pep585_and_no_stdlib_newer_than_38(source: Path) -> None:
    tree = _tree(source)
    lazy = _annotation_nodes(tree)
    problems = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if id(node) in lazy:
            continue
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id in BUILTIN_GENERICS
        ):
            problems.append(f"line {line}: {node.value.id}[...] evaluated at runtime")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            sides = (node.left, node.right)
            if any(isinstance(s, ast.Constant) and s.value is None for s in sides):
                problems.append(f"line {line}: `X | None` evaluated at runtime")
        if isinstance(node, ast.Attribute) and node.attr in NEWER_THAN_38:
            problems.append(f"line {line}: .{node.attr} is newer than Python 3.8")
        if isinstance(node, ast.Call) and any(k.arg == "strict" for k in node.keywords):
            problems.append(f"line {line}: strict= (zip, 3.10)")
        if isinstance(node, ast.ClassDef):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call):
                    bad = {k.arg for k in deco.keywords} & {"slots", "kw_only", "match_args"}
                    if bad:
                        problems.append(f"line {line}: dataclass({', '.join(sorted(bad))}=)")
    assert not problems, problems


def test_the_checks_catch_what_they_claim_to(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = (
        "from __future__ import annotations\n"
        "import pydantic\n"
        "Alias = list[int]\n"
        "def f(x: list[int] | None) -> str:\n"
        "    return 'ab'.removeprefix('a')\n"
    )
    monkeypatch.setattr(ast, "parse", _parse_instead(bad))
    with pytest.raises(AssertionError, match="imports pydantic"):
        test_imports_only_the_standard_library_and_tensorrt_lazily(SOURCE)
    with pytest.raises(AssertionError) as e:
        test_no_runtime_pep604_or_pep585_and_no_stdlib_newer_than_38(SOURCE)
    assert "line 3: list[...]" in str(e.value) and "removeprefix" in str(e.value)
    assert "line 4" not in str(e.value), "annotations are lazy and must not be flagged"


def _parse_instead(source: str) -> Callable[..., ast.Module]:
    real = ast.parse

    def parse(_: str, **kwargs: object) -> ast.Module:
        return real(source)

    return parse


def test_loads_as_a_lone_file_without_the_rest_of_fovea() -> None:
    """What the JetPack worker will do: load the file by path, with pydantic and Fovea absent."""
    code = f"""
import importlib.abc, importlib.util, sys
REFUSED = {{"pydantic", "torch", "edge_agent", "server", "models", "deploy"}}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in REFUSED:
            raise ImportError("refused: " + name)
sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location("trt_build", {str(SOURCE)!r})
mod = sys.modules["trt_build"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
s = mod.BuildSpec(onnx=mod.Path("m.onnx"), generation=mod.generation("8.5.2.2"),
                  input_name="images", input_shape=(3, 8, 8), batches=(1, 1, 2), workspace_mb=8,
                  flags=("INT8",), calibration_cache=mod.Path("c"))
print(s.builder_flags(), s.calibrator_cache(), mod.version_tag("8.5.2.2"))
"""
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["('INT8',)", "c", "8502"]
