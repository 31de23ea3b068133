#!/usr/bin/env python3
"""Lists import circles between sitio's modules: every `use crate::a::...`
(and `crate::a::` paths) in src/ is an arrow from the file's module to `a`
(top-level modules; `a/mod.rs` and `a/*.rs` are one module). Prints the
circles found and exits 1 if there is any.

Usage: scripts/module_cycles.py [--depth 2]   (2: also submodules, e.g. upstream::body)
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
DEPTH = int(sys.argv[sys.argv.index("--depth") + 1]) if "--depth" in sys.argv else 1


def module_of(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts[:DEPTH]) or "crate"


def targets(text):
    found = set()
    for m in re.finditer(r"crate::((?:[a-z_][a-z0-9_]*::?)+)", text):
        names = [n for n in m.group(1).split("::") if n]
        found.add("::".join(names[:DEPTH]))
    # `use crate::{a, b::c}` groups
    for m in re.finditer(r"use crate::\{([^}]*)\}", text, re.S):
        for item in m.group(1).split(","):
            names = [n.strip() for n in item.strip().split("::") if n.strip()]
            if names and re.match(r"[a-z_]", names[0]):
                found.add("::".join(names[:DEPTH]))
    return found


def main():
    graph = {}
    for path in SRC.rglob("*.rs"):
        text = re.sub(r"//[^\n]*", "", path.read_text())
        text = text.split("#[cfg(test)]")[0]  # tests may look anywhere
        src = module_of(path)
        for dst in targets(text):
            top = dst.split("::")[0]
            if top and dst != src and not src.startswith(dst + "::") and not dst.startswith(src + "::"):
                if (SRC / f"{top}.rs").exists() or (SRC / top).is_dir():
                    graph.setdefault(src, set()).add(dst)
    cycles, seen = [], set()

    def walk(node, stack):
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycle = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    cycles.append(cycle)
            elif len(stack) < 12:
                walk(nxt, stack + [nxt])

    for node in sorted(graph):
        walk(node, [node])
    for c in cycles:
        print("circle: " + " -> ".join(c))
    print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} arrows, {len(cycles)} circles")
    sys.exit(1 if cycles else 0)


if __name__ == "__main__":
    main()
