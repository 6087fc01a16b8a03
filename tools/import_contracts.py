"""Import-linter contracts of our own: every package is used through its front.

``fronts``: a module may import a module ``P.m`` (not a package) only from inside ``P``; from
anywhere else it imports ``P`` itself, whose ``__init__`` names the public API in ``__all__``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def _inside(importer: str, package: str) -> bool:
    return importer == package or importer.startswith(package + ".")


class FrontsContract(Contract):
    """Modules of ``containers`` import other packages' modules only through their fronts."""

    type_name = "fronts"

    containers = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        """Every import of a non-package module from outside its package is a violation."""
        roots: tuple[str, ...] = tuple(self.containers)  # type: ignore[arg-type]
        packages = {m: _is_package(m) for m in graph.modules if m.split(".")[0] in roots}
        broken: list[dict[str, Any]] = []
        for importer in sorted(packages):
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported not in packages or packages[imported]:
                    continue
                package = imported.rsplit(".", 1)[0]
                if _inside(importer, package):
                    continue
                details = graph.get_import_details(importer=importer, imported=imported)
                lines = sorted({d["line_number"] for d in details})
                broken.append(
                    {"importer": importer, "imported": imported, "front": package, "lines": lines}
                )
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        """One line per import that reaches past a front."""
        for b in check.metadata["broken"]:
            lines = ", ".join(f"l.{n}" for n in b["lines"])
            output.print_error(
                f"{b['importer']} -> {b['imported']} ({lines}): import it from {b['front']}",
                bold=False,
            )
        output.new_line()
