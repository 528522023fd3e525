"""No import circles between the files of src/ (the server library), counting non-test code.

A file depends on another when it names an item there through a `crate::`, `super::` or `self::`
path (in a `use` or inline). A module's root (`mod.rs`) reaching into its own children is not
counted: the children are its parts. Comments and `#[cfg(test)] mod tests` are left out. Exits 1
naming each circle and the paths that close it.

    python3 .ci/check_import_circles.py [src]
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def module_path(root: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return ("crate", *parts)


def code_of(file: Path) -> str:
    text = file.read_text()
    tests = re.search(r"#\[cfg\(test\)\]\s*mod tests", text)
    if tests:
        text = text[: tests.start()]
    return re.sub(r"//[^\n]*", "", text)


def paths_in(code: str) -> list[str]:
    """Every `crate::…`, `super::…` and `self::…` path, with `{a, b::c}` groups expanded."""
    found = []
    for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)(?:::\{([^;]*?)\})?", code, re.S):
        base = m.group(1)
        found.append(base)
        for item in (m.group(2) or "").split(","):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self" and "{" not in item:
                found.append(f"{base}::{item}")
    return found


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    files = [
        f
        for f in root.rglob("*.rs")
        if "bin" not in f.relative_to(root).parts and f.name != "main.rs"
    ]
    modules = {module_path(root, f): f for f in files}

    def resolve(here: tuple[str, ...], path: str) -> Path | None:
        parts = path.split("::")
        if parts[0] == "crate":
            target = parts
        else:
            base = list(here)
            while parts and parts[0] in ("super", "self"):
                if parts[0] == "super":
                    base = base[:-1]
                parts = parts[1:]
            target = base + parts
        for n in range(len(target), 0, -1):
            if tuple(target[:n]) in modules:
                return modules[tuple(target[:n])]
        return None

    edges: dict[Path, dict[Path, str]] = {f: {} for f in files}
    for f in files:
        here = module_path(root, f)
        for path in paths_in(code_of(f)):
            target = resolve(here, path)
            if target is None or target == f:
                continue
            child_of_root = f.name == "mod.rs" and module_path(root, target)[:-1] == here
            if not child_of_root:
                edges[f].setdefault(target, path)

    # Tarjan's strongly connected components, iteratively.
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    on_stack: set[Path] = set()
    stack: list[Path] = []
    circles: list[list[Path]] = []
    counter = 0
    for start in files:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(component)

    for circle in circles:
        names = sorted(os.fspath(f) for f in circle)
        print(f"import circle: {', '.join(names)}")
        for f in circle:
            for target, path in edges[f].items():
                if target in circle:
                    print(f"    {f} -> {target} (through {path})")
    print(f"import circles: {len(circles)} in {len(files)} files")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
