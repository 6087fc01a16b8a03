"""Measure how the code reads, with ``ast``: annotations, docstrings, function and module sizes.

``python -m tools.code_stats`` prints the figures; ``--check`` also fails (exit 1) when a limit
is passed: every function fully annotated, at least 95% of public functions documented, no
function over 80 lines (benchmark ``main`` functions aside), no module over 400 lines.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("models", "server", "edge_agent", "deploy", "benchmarks")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
MIN_DOCUMENTED = 0.95


@dataclass
class Stats:
    """What the walk over the packages found."""

    modules: int = 0
    lines: int = 0
    functions: int = 0
    annotated: int = 0
    public: int = 0
    documented: int = 0
    function_lines: list[int] = field(default_factory=list)
    module_lines: list[int] = field(default_factory=list)
    unannotated: list[str] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)
    long_functions: list[str] = field(default_factory=list)
    long_modules: list[str] = field(default_factory=list)


def _annotated(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    a = fn.args
    params = a.posonlyargs + a.args + a.kwonlyargs
    if params and params[0].arg in ("self", "cls"):
        params = params[1:]
    extra = [x for x in (a.vararg, a.kwarg) if x is not None]
    return fn.returns is not None and all(p.annotation is not None for p in params + extra)


def _is_public(name: str, parents: list[str]) -> bool:
    return not name.startswith("_") and not any(p.startswith("_") for p in parents)


def _walk(node: ast.AST, path: str, parents: list[str], stats: Stats) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            where = f"{path}:{child.lineno} {'.'.join([*parents, child.name])}"
            stats.functions += 1
            length = (child.end_lineno or child.lineno) - child.lineno + 1
            stats.function_lines.append(length)
            if _annotated(child):
                stats.annotated += 1
            else:
                stats.unannotated.append(where)
            # functions nested in functions are part of their parent, not API
            if _is_public(child.name, parents) and not any(p.islower() for p in parents):
                stats.public += 1
                if ast.get_docstring(child):
                    stats.documented += 1
                else:
                    stats.undocumented.append(where)
            is_bench_main = path.startswith("benchmarks/") and child.name == "main"
            if length > MAX_FUNCTION_LINES and not is_bench_main:
                stats.long_functions.append(f"{where} ({length} lines)")
            _walk(child, path, [*parents, child.name], stats)
        elif isinstance(child, ast.ClassDef):
            _walk(child, path, [*parents, child.name], stats)
        else:
            _walk(child, path, parents, stats)


def measure(root: Path) -> Stats:
    """Walk every module of :data:`PACKAGES` under ``root``."""
    stats = Stats()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(root).as_posix()
            n = len(text.splitlines())
            stats.modules += 1
            stats.lines += n
            stats.module_lines.append(n)
            if n > MAX_MODULE_LINES:
                stats.long_modules.append(f"{rel} ({n} lines)")
            _walk(ast.parse(text), rel, [], stats)
    return stats


def report(stats: Stats) -> list[str]:
    """The figures, one per line."""
    documented = stats.documented / max(stats.public, 1)
    return [
        f"modules {stats.modules}, lines {stats.lines}, functions {stats.functions}",
        f"fully annotated: {stats.annotated}/{stats.functions}"
        f" ({100 * stats.annotated / max(stats.functions, 1):.1f}%)",
        f"public functions documented: {stats.documented}/{stats.public} ({100 * documented:.1f}%)",
        f"median function {statistics.median(stats.function_lines):.0f} lines, longest"
        f" {max(stats.function_lines)}; median module {statistics.median(stats.module_lines):.0f}"
        f" lines, longest {max(stats.module_lines)}",
        f"functions over {MAX_FUNCTION_LINES} lines (benchmark mains aside):"
        f" {len(stats.long_functions)}; modules over {MAX_MODULE_LINES} lines:"
        f" {len(stats.long_modules)}",
    ]


def problems(stats: Stats) -> list[str]:
    """Each limit passed, with where."""
    out = [f"not fully annotated: {w}" for w in stats.unannotated]
    out += [f"too long: {w}" for w in stats.long_functions + stats.long_modules]
    if stats.documented < MIN_DOCUMENTED * stats.public:
        out += [f"undocumented: {w}" for w in stats.undocumented]
        out.append(f"fewer than {MIN_DOCUMENTED:.0%} of public functions documented")
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures; with ``--check``, list what passes a limit and exit 1 if anything does."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a limit is passed")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    stats = measure(args.root)
    print("\n".join(report(stats)))
    found = problems(stats) if args.check else []
    for p in found:
        print(p, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
