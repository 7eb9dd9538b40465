"""The package's import graph, printed by layer, and the check that keeps it a graph without circles.

``python -m transmix.tools.imports`` prints which group (``method``, ``training``, ...) imports which, from the top
layer down, and exits with 1 naming the modules when a module imports, directly or through others, a module that
imports it back, or when a group imports a group above it in :data:`LAYERS`. Imports inside functions count: a
circle closed by a deferred import is still a circle. The graph is grimp's (the library behind import-linter), built
from the source without importing it.
"""

from __future__ import annotations

import argparse
import graphlib
import sys
from collections import defaultdict

# Groups from the top layer down: a group may import from its own modules and from groups below it, never above.
LAYERS = ("cli", "tools", "reporting", "robustness", "evaluation", "training", "method", "data", "records", "config",
          "errors", "transmix")  # fmt: skip


def group(module: str) -> str:
    """``transmix.training.train`` -> ``training``; the package's own ``__init__`` is ``transmix``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def edges(package: str = "transmix") -> dict[str, set[str]]:
    """Every module of ``package`` and the modules of ``package`` it imports (anywhere in the module)."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None)
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in sorted(graph.modules)}


def problems(graph: dict[str, set[str]], layers: tuple[str, ...] = LAYERS) -> list[str]:
    """What breaks the layering: a circle of modules, a group not in ``layers``, a group importing one above it."""
    found = []
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        found.append("import circle: " + " -> ".join(err.args[1]))
    rank = {name: i for i, name in enumerate(layers)}
    for module, imported in graph.items():
        if group(module) not in rank:
            found.append(f"{module}: its group {group(module)!r} is not in LAYERS; add it where it belongs")
            continue
        for other in sorted(imported):
            if rank.get(group(other), len(layers)) < rank[group(module)]:
                found.append(f"{module} imports {other}: {group(module)!r} lies below {group(other)!r} in LAYERS")
    return found


def by_group(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The groups each group imports (its own modules left out)."""
    out: dict[str, set[str]] = defaultdict(set)
    for module, imported in graph.items():
        out[group(module)] |= {group(other) for other in imported} - {group(module)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transmix.tools.imports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--modules", action="store_true", help="also every module and the modules it imports")
    parser.add_argument("--package", default="transmix", help=argparse.SUPPRESS)  # the tests point it at a toy
    args = parser.parse_args(argv)
    graph = edges(args.package)
    groups = by_group(graph)
    width = max(len(name) for name in LAYERS)
    print(f"{args.package}: {len(graph)} modules; each group imports (layers from the top):")
    for name in [*LAYERS, *sorted(set(groups) - set(LAYERS))]:
        if name in groups or any(group(m) == name for m in graph):
            print(f"  {name:<{width}}  -> {', '.join(sorted(groups.get(name, ()), key=_rank)) or '(nothing)'}")
    if args.modules:
        for module, imported in graph.items():
            print(f"{module} -> {', '.join(sorted(imported)) or '(nothing)'}")
    found = problems(graph)
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if not found:
        print("no circle: every module imports only its own group's modules and the groups below it")
    return 1 if found else 0


def _rank(name: str) -> int:
    return LAYERS.index(name) if name in LAYERS else len(LAYERS)


if __name__ == "__main__":
    sys.exit(main())
