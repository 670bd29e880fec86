"""The documentation says what the code does: its links resolve, the commands it names exist,
the generated pages match their generators, and the public API it lists is the packages' own.

Checked documents: README.md and every docs/*.md; for citations and `docs/` links, every source
file of the repository.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOC_IDS = [str(p.relative_to(ROOT)) for p in DOCS]

_FENCE = re.compile(r"^(```|~~~)([\w+-]*).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
# Fenced blocks read for commands: shell sessions and unlabelled blocks (not text, yaml...).
_SHELL_BLOCKS = frozenset({"", "bash", "sh", "shell", "console", "zsh", "ini"})
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A `churn` invocation: the console script (maybe as .../bin/churn), the global --debug
# option, a subcommand and, for a command group, its subcommand. Same line only, so that
# "job_name: churn" followed by a YAML key on the next line is not read as a command.
_COMMAND = re.compile(
    r"(?:^|(?<=[\s`(=])|(?<=bin/))churn(?:[ \t]+--debug)?[ \t]+([a-z][\w-]*)"
    r"(?:[ \t]+([a-z][\w-]*))?",
    re.MULTILINE,
)


def _code(text: str) -> list[str]:
    """The shell and unlabelled code blocks and the inline code spans of a Markdown text."""
    blocks = [m.group(0) for m in _FENCE.finditer(text) if m.group(2).lower() in _SHELL_BLOCKS]
    prose = _FENCE.sub("", text)
    return blocks + _INLINE_CODE.findall(prose)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def _links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    text = _INLINE_CODE.sub("", text)
    return _LINK.findall(text)


def test_the_documentation_pages_exist():
    names = {p.name for p in DOCS}
    for page in (
        "architecture.md",
        "data-contract.md",
        "domain.md",
        "own-data.md",
        "metrics.md",
        "model-card-template.md",
        "runbook.md",
        "security.md",
    ):
        assert page in names, f"docs/{page} is missing"


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_relative_link_resolves_to_a_file_and_anchor(doc: Path):
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http(s):, mailto: and other absolute URLs
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.exists():
            broken.append(f"{target} (no file {resolved})")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links: {broken}"


def _cli_commands() -> dict[str, set[str] | None]:
    """Registered `churn` subcommands; a command group maps to its own subcommands."""
    import typer.main

    from churn_cli.main import app

    group = typer.main.get_command(app)  # a click group (typer may vendor its own click)
    return {
        name: set(cmd.commands) if hasattr(cmd, "commands") else None
        for name, cmd in group.commands.items()
    }


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_churn_command_named_in_the_docs_exists(doc: Path):
    commands = _cli_commands()
    unknown = []
    for snippet in _code(doc.read_text(encoding="utf-8")):
        for name, sub in _COMMAND.findall(snippet):
            if name not in commands:
                unknown.append(f"churn {name}")
            elif commands[name] is not None and sub and sub not in commands[name]:
                unknown.append(f"churn {name} {sub}")
    assert not unknown, (
        f"{doc.relative_to(ROOT)} names commands the CLI does not have: {sorted(set(unknown))}; "
        f"it has {sorted(commands)}"
    )


def test_the_command_finder_sees_commands_and_ignores_look_alikes():
    text = (
        "Run `churn keys add --role crm` or `.venv/bin/churn --debug train`.\n"
        "```bash\nKEY=$(churn keys revoke ID)\njournalctl -u churn -o cat\n```\n"
        "```yaml\njob_name: churn\nscheme: https\n```\n"
        "```text\nclient churn within 90 days\n```\n"
        "```bash\npg_dump --file=x postgresql://churn@db/churn store.dump\n```\n"
        "The churn rate and `churn-model` and `churn.yaml` are not commands."
    )
    found = [m for snippet in _code(text) for m in _COMMAND.findall(snippet)]
    assert sorted(found) == [("keys", "add"), ("keys", "revoke"), ("train", "")]


def test_the_data_contract_page_is_the_generators_output():
    from features.contract import contract_markdown

    page = ROOT / "docs" / "data-contract.md"
    assert page.read_text(encoding="utf-8") == contract_markdown(), (
        f"regenerate it: python -m features.contract > {page.relative_to(ROOT)}"
    )


@pytest.mark.parametrize("package", ["features", "training", "serving"])
def test_each_public_name_resolves_and_is_listed_in_the_architecture_page(package: str):
    module = importlib.import_module(package)
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split(f"### `{package}`", 1)[1].split("\n### ", 1)[0]
    for name in module.__all__:
        assert getattr(module, name) is not None
        assert f"`{name}" in section, f"{package}.{name} is public but not in architecture.md"


def test_a_public_function_stays_public_when_its_module_is_imported_first():
    """``training.evaluate`` (and ``training.train``) name both a module and the function the
    package exports; importing the module first must not replace the function."""
    saved = {k: m for k, m in sys.modules.items() if k == "training" or k.startswith("training.")}
    for name in saved:
        del sys.modules[name]
    try:
        from training.evaluate import evaluate as defined  # first import of the module

        training = sys.modules["training"]
        assert training.evaluate is defined and callable(training.evaluate)
    finally:
        for name in [k for k in sys.modules if k == "training" or k.startswith("training.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_every_health_rule_feature_is_named_in_the_metrics_page():
    from features.health import load_health_config

    page = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    cfg = load_health_config()
    for name, component in cfg.components.items():
        assert f"| {name} | {component.max_points:g} |" in page
        for rule in component.rules:
            assert f"`{rule.feature}`" in page, f"health rule {rule.name} missing in metrics.md"


# Source files read for citations and `docs/` links: code, templates, configs and documents.
_SOURCE_SUFFIXES = frozenset({".py", ".html", ".yaml", ".yml", ".toml", ".md", ".cfg", ".ini"})
_SOURCE_NAMES = frozenset({"Makefile"})
# A citation of a document outside the repository: a specification section ("SPEC 4"), the
# domain notes ("DOMAIN ...") or an issue number ("issue 7", "issues 6 and 8", "issue #7").
# Upper-case words only for the first two, so `SPEC_FIELDS` or "a pip spec" are not citations.
_OUTSIDE_CITATION = re.compile(r"\b(?:SPEC|DOMAIN)\b|\b[Ii]ssues?\s+#?\d")
# A repository path into docs/ as written in a comment ("see docs/domain.md#escalations"); the
# look-behind skips URLs (".../docs/...") and relative Markdown links, checked above.
_DOCS_REFERENCE = re.compile(r"(?<![\w./-])(docs/[\w./-]*?\.md)(?:#([\w-]+))?")


def _source_files() -> list[Path]:
    """Every tracked (or new, not ignored) source file of the repository; .venv is ignored."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        paths = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        paths = [
            p
            for p in ROOT.rglob("*")
            if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
        ]
    return sorted(
        p
        for p in paths
        if p.is_file() and (p.suffix in _SOURCE_SUFFIXES or p.name in _SOURCE_NAMES)
    )


def test_no_source_file_cites_documents_outside_the_repository():
    """A new engineer cannot follow "SPEC 4" or "issue 7": comments link into docs/ instead."""
    this_file = Path(__file__).resolve()  # its patterns and examples name what they look for
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _source_files()
        if path.resolve() != this_file
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if _OUTSIDE_CITATION.search(line)
    ]
    assert not found, (
        "cite docs/ (e.g. docs/domain.md#escalations) or give the reason itself:\n"
        + "\n".join(found)
    )


def test_the_citation_finder_sees_citations_and_ignores_look_alikes():
    cited = ["(SPEC 4)", 'DOMAIN "Segments"', "issue 7", "Issue 5's targets", "issues 6 and 8"]
    plain = ["SPEC_FIELDS = {", "asdict(spec)", "ActionSpec", "an issue with the data", "tissue 3"]
    assert all(_OUTSIDE_CITATION.search(text) for text in cited)
    assert not any(_OUTSIDE_CITATION.search(text) for text in plain)


def test_every_docs_reference_in_the_sources_names_an_existing_page_and_heading():
    broken = []
    for path in _source_files():
        for page, anchor in _DOCS_REFERENCE.findall(path.read_text(encoding="utf-8")):
            target = ROOT / page
            where = f"{path.relative_to(ROOT)}: {page}{'#' + anchor if anchor else ''}"
            if not target.is_file():
                broken.append(f"{where} (no such page)")
            elif anchor and anchor not in _anchors(target):
                broken.append(f"{where} (no heading #{anchor} in {page})")
    assert not broken, f"broken docs/ references: {broken}"


def test_the_docs_reference_finder_reads_paths_not_urls():
    text = (
        "# see docs/domain.md#escalations; docs/cluster.md.\n"
        "http://127.0.0.1:8000/docs/x.md#y and [metrics](../docs/metrics.md#z)"
    )
    assert _DOCS_REFERENCE.findall(text) == [
        ("docs/domain.md", "escalations"),
        ("docs/cluster.md", ""),
    ]


# -- the README's annotated tree -----------------------------------------------------------------


def _layout_entries() -> dict[str, str]:
    """Path -> annotation of every entry of the README's "Repository layout" tree."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Repository layout", 1)[1]
    block = _FENCE.search(section)
    assert block is not None, "the Repository layout section has no tree"
    entries: dict[str, str] = {}
    folder = ""
    for line in block.group(0).splitlines()[1:-1]:
        names, _, note = line.strip().partition("  ")
        if not line.startswith(" "):
            folder = names
        elif not names.endswith((".py", "/")):
            continue  # a continued annotation
        for name in names.split():
            entries[name if name == folder else folder + name] = note.strip()
    return entries


def test_every_path_in_the_readme_tree_exists():
    missing = [path for path in _layout_entries() if not (ROOT / path).exists()]
    assert not missing, f"the README tree names paths that do not exist: {missing}"


# Internal helpers the tree may leave out: they serve one module beside them.
_UNLISTED_HELPERS = {"lazy", "bundle_checks", "distributed", "config_files", "progress"}


def test_the_readme_tree_names_every_package_and_every_core_and_pipeline_module():
    entries = _layout_entries()
    expected = [f"{p}/" for p in ("churn", "churn_cli", "features", "training", "serving")]
    for package in ("churn", "churn_cli", "training"):
        expected += [
            f"{package}/{m.name}"
            for m in sorted((ROOT / package).glob("*.py"))
            if not m.name.startswith("_") and m.stem not in _UNLISTED_HELPERS
        ]
    expected += ["serving/score_record.py", "training/pipeline.py", "churn/engine.py"]
    missing = [path for path in expected if path not in entries]
    assert not missing, f"the README tree leaves out {missing}"
    assert entries["serving/score_record.py"] and entries["training/pipeline.py"]
