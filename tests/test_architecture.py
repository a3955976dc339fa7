"""The wiring rules, checked on the source: layers point down and no two modules import each other
(directly or around a cycle). ``make test`` also runs import-linter's layer contract (pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGES = ("scenes", "reconstruct", "pruning", "viewer", "recon")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph():
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the test extra)")
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _ignoring_packages(graph, cycle: list[str]) -> bool:
    """A package's __init__ re-exporting its own submodules is not a cycle between modules."""
    return all(m.count(".") == 0 for m in cycle)


def test_no_import_cycles_between_modules(graph):
    cycles = [c for c in _cycles(graph) if not _ignoring_packages(graph, c)]
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_a_package_above_its_own(graph):
    rank = {p: i for i, p in enumerate(PACKAGES)}
    wrong = []
    for module in graph.modules:
        top = module.split(".")[0]
        for imported in graph.find_modules_directly_imported_by(module):
            if rank[imported.split(".")[0]] > rank[top]:
                wrong.append(f"{module} -> {imported}")
    assert not wrong, wrong


def test_run_folder_names_are_spelled_in_one_module():
    names = ('"checkpoint.pt"', '"config.json"', '"splats.ply"')
    owners = set()
    for pkg in PACKAGES[:4]:
        for path in (ROOT / pkg).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if any(n in text for n in names):
                owners.add(str(path.relative_to(ROOT)))
    assert owners == {"reconstruct/run.py"}, owners
