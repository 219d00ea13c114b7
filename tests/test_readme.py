"""The README's promises that code can check: what a lab mirror must hold."""
from __future__ import annotations

import re

from conftest import MIRROR, REPO

from retrievalkit.datasets import LOADERS, manifest


def _mirror_table() -> dict[str, set[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Lab mirror", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and "`" in cells[1]:
            rows[cells[0]] = set(re.findall(r"`([^`]+\.(?:zip|gz|pkl|tgz|dat|tar))`", cells[1]))
    return rows


def _datasets_the_notebooks_load() -> set[str]:
    names = set()
    for source in sorted((REPO / "notebooks").glob("[0-9]*.py")):
        text = source.read_text()
        names |= set(re.findall(r"datasets\.load\(\s*[\"'](\w+)[\"']", text))
        if "coil_data(" in text or "Coil(" in text or "coil100" in text:
            names.add("coil100")
        if "fashion_data(" in text:
            names.add("fashion_mnist")
    return names


def test_the_mirror_table_lists_every_file_the_notebooks_need():
    table = _mirror_table()
    notebook_row = next(files for label, files in table.items() if label.startswith("every notebook"))
    needed = _datasets_the_notebooks_load()
    assert needed >= {"coil100", "fashion_mnist"}, needed
    assert needed <= set(LOADERS), needed
    for name in needed:
        missing = {spec.filename for spec in manifest.get(name).files} - notebook_row
        assert not missing, f"README's mirror table lacks {missing} (needed by the notebooks through {name})"


def test_every_file_the_mirror_table_names_is_in_the_shared_mirror():
    for label, files in _mirror_table().items():
        assert files, label
        for name in files:
            assert (MIRROR / name).is_file(), f"README names {name} for {label!r} but {MIRROR} lacks it"


def _package_map() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Package map", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    return [line.split()[0] for line in block.splitlines() if line.strip().split(" ")[0].endswith(".py")]


def test_the_package_map_has_one_line_per_module():
    listed = _package_map()
    modules = {str(p.relative_to(REPO / "retrievalkit")) for p in (REPO / "retrievalkit").rglob("*.py")
               if p.name != "__init__.py"}
    assert len(listed) == len(set(listed)), sorted({m for m in listed if listed.count(m) > 1})
    assert not modules - set(listed), f"README's package map lacks {sorted(modules - set(listed))}"
    assert not set(listed) - modules, f"README's package map names missing modules {sorted(set(listed) - modules)}"
