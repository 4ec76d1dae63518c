#!/usr/bin/env python3
"""Draw the package import graph of vcf_agent into docs/architecture.md, from the imports themselves.

grimp (which import-linter uses) reads every module's imports, including the ones inside
functions and under TYPE_CHECKING; the modules are then grouped and each import between two
groups is one arrow. Two diagrams are written between the markers in docs/architecture.md:

- the house: the entry point, the app, each service, the core as one box, the generated schema;
- inside the core: its top-level modules and packages.

    .venv/bin/python scripts/draw-imports.py          # rewrite the diagrams
    .venv/bin/python scripts/draw-imports.py --check  # exit 1 if the committed ones are stale
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import grimp

ROOT = "vcf_agent"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
BEGIN = "<!-- imports:begin (scripts/draw-imports.py writes this block; do not edit by hand) -->"
END = "<!-- imports:end -->"
# Top-level modules that are not the core: the entry point, the command layer, the services
# and the generated schema.
OUTSIDE_CORE = {"__main__", "app", "services", "v1"}


def house_node(module: str) -> str:
    """The group a module belongs to in the house diagram."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"  # vcf_agent/__init__.py (the version) is core.
    if parts[1] == "services":
        return f"services.{parts[2]}" if len(parts) > 2 else "services"
    return parts[1] if parts[1] in OUTSIDE_CORE else "core"


def core_node(module: str) -> str | None:
    """The core module or package a module belongs to; None outside the core."""
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT
    return None if parts[1] in OUTSIDE_CORE else parts[1]


def groups(graph: grimp.ImportGraph, group: Callable[[str], str | None]) -> set[str]:
    return {g for g in map(group, graph.modules) if g is not None}


def edges(graph: grimp.ImportGraph, group: Callable[[str], str | None]) -> set[tuple[str, str]]:
    found = set()
    for module in graph.modules:
        source = group(module)
        if source is None:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            target = group(imported)
            if target is not None and target != source:
                found.add((source, target))
    return found


def _id(name: str) -> str:
    return name.replace(".", "_").strip("_") or "root"


def mermaid(nodes: Iterable[str], pairs: Iterable[tuple[str, str]], *, services_box: bool) -> str:
    nodes, pairs = sorted(nodes), sorted(pairs)
    lines = ["```mermaid", "flowchart TD"]
    services = [n for n in nodes if n.startswith("services.")]
    for node in nodes:
        if node not in services:
            lines.append(f'    {_id(node)}["{node}"]')
    if services_box and services:
        lines.append('    subgraph services["services (talk only through the streams)"]')
        lines.extend(f'        {_id(n)}["{n.removeprefix("services.")}"]' for n in services)
        lines.append("    end")
    lines.extend(f"    {_id(a)} --> {_id(b)}" for a, b in pairs)
    lines.append("```")
    return "\n".join(lines)


def block() -> str:
    graph = grimp.build_graph(ROOT, cache_dir=None)
    house = edges(graph, house_node)
    crossing = sorted((a, b) for a, b in house if a.startswith("services.") and b.startswith("services."))
    if crossing:
        # lint-imports names the modules; the diagram is never drawn with such an arrow.
        raise SystemExit(f"draw-imports: services import each other: {crossing}; run lint-imports")
    return "\n\n".join(
        [
            BEGIN,
            "The house (an arrow is `imports`; the core is one box):",
            mermaid(groups(graph, house_node) - {"services"}, house, services_box=True),
            "Inside the core (its top-level modules and packages; `vcf_agent` is the package's `__init__`):",
            mermaid(groups(graph, core_node), edges(graph, core_node), services_box=False),
            END,
        ]
    )


def with_block(text: str, drawn: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + drawn + text[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/architecture.md is stale")
    args = parser.parse_args()
    text = DOC.read_text()
    updated = with_block(text, block())
    if args.check:
        if updated != text:
            print("docs/architecture.md: the import diagrams are stale; run scripts/draw-imports.py")
            return 1
        return 0
    DOC.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
