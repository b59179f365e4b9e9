#!/usr/bin/env python3
"""Checks the shape of src/: no import cycle between its files, and `unsafe`
only in src/ffi/. Exits 1 naming the cycle or the file.

A file depends on another when it names it through `crate::` (in a `use`
tree or inline); a `#[macro_export]` macro (`crate::name`) belongs to the
file that defines it.
"""

import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_files():
    """{("kinds", "class"): path, ...} for every file of src/ (lib.rs is ())."""
    files = {}
    for path in SRC.rglob("*.rs"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "mod":
            parts = parts[:-1]
        elif parts == ("lib",):
            parts = ()
        files[parts] = path
    return files


def macro_homes(files):
    homes = {}
    for parts, path in files.items():
        for name in re.findall(r"#\[macro_export\]\s*macro_rules!\s*(\w+)", path.read_text()):
            homes[name] = parts
    return homes


def use_paths(text):
    """Every path named after `crate::`, with `use` trees expanded."""
    text = re.sub(r"//[^\n]*", "", text)
    paths = []
    for tree in re.findall(r"\buse\s+crate::([^;]+);", text):
        paths.extend(expand(tree.replace("\n", " ").replace(" ", "")))
    text = re.sub(r"\buse\s+crate::[^;]+;", "", text)
    paths.extend(re.findall(r"crate::((?:\w+::)*\w+)", text))
    return [tuple(p.split("::")) for p in paths]


def expand(tree):
    """`a::{b, c::{d}}` -> ["a::b", "a::c::d"]."""
    head, brace, rest = tree.partition("{")
    if not brace:
        return [tree]
    inner = rest[: rest.rindex("}")]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    out = []
    for item in filter(None, items):
        for sub in expand(item):
            out.append(head + sub if sub != "self" else head.rstrip(":"))
    return out


def target_of(path, files, macros):
    """The file a `crate::` path names: its longest prefix that is a file."""
    if len(path) == 1 and path[0] in macros:
        return macros[path[0]]
    for n in range(len(path), 0, -1):
        if path[:n] in files:
            return path[:n]
    return None


def find_cycle(graph):
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def name(parts):
    return "src/" + ("/".join(parts) + ".rs" if parts else "lib.rs")


def main():
    files = module_files()
    macros = macro_homes(files)
    graph = {}
    problems = []
    for parts, path in files.items():
        text = path.read_text()
        deps = {target_of(p, files, macros) for p in use_paths(text)}
        graph[parts] = {d for d in deps if d is not None and d != parts and d != ()}
        if parts[:1] != ("ffi",) and re.search(r"\bunsafe\b", re.sub(r"//[^\n]*", "", text)):
            problems.append(f"{name(parts)} uses `unsafe` outside src/ffi/")
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(name(p) for p in cycle))
    for problem in problems:
        print(f"src_shape: {problem}", file=sys.stderr)
    if not problems:
        print(f"src_shape: {len(files)} files, no import cycle, unsafe only in src/ffi/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
