"""The documentation a new user reads: every relative link and image in README.md and docs/ exists,
the README stays short, and the docs and the user-facing strings of the package and scripts speak
of the project only (no work sessions, issue numbers, first person, "here", borrowed hardware or
paths outside the repository)."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# phrases that tell a story of how the work was done instead of stating the project's facts
FORBIDDEN = [
    (r"\bsessions?\b", "a work session"),
    (r"\bissue \d+|\bissues? #\d+|\bthis issue\b", "an issue number"),
    (r"\b(?:we|We|our|Our|my|My)\b", "the first person"),
    (r"\bI (?:did|do|have|had|am|was|think|found|ran|measured|could|would|will|looked|searched|chose|tried|"
     r"noticed|saw)\b", "the first person"),
    (r"\b[Hh]ere\b", "'here' (name the place or the conditions)"),
    (r"\bthis (?:machine|VM|box|computer|CPU)\b", "'this machine' (name the hardware neutrally)"),
    (r"\blent\b|\bborrowed\b|\bcarried to\b", "borrowed hardware"),
    (r"\.\./shared|/work/|shared/data", "a path outside the repository"),
    (r"\bSPEC\b", "a document outside the repository"),
    (r"[Ss]aid plainly", "a story"),
    (r"\b(?:earlier|previous|old) (?:report|version|page|docs?)\b|\bnamed `[^`]+` before\b|\bformerly\b"
     r"|\binterrupted once\b", "a reference to an earlier version"),
]

# in the docs only (code strings say "this run" of the run being configured): the history of the work
HISTORY = [
    (r"\b(?:then|now|was|were) (?:named|renamed|called)\b|\brenamed\b|\b(?:resumed|restarted) once\b"
     r"|\b(?:added|fixed|changed|removed) since\b|\bhas not been run since\b", "a reference to an earlier version"),
    (r"\b[Tt]his run\b", "'this run' (name the run: its command and commit)"),
    (r"\b(?:folders?|runs?) (?:made |kept )?(?:in a folder )?outside the checkout\b|\bnext runs?\b to make",
     "the history of the work (where its folders were, what to run next)"),
]


def _strings(path: Path):
    """(line, text) of every string constant in a Python file (docstrings, messages, help texts)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _offences(text: str, patterns=FORBIDDEN):
    for pattern, what in patterns:
        for m in re.finditer(pattern, text):
            yield what, m.group(0)


def test_docs_and_user_facing_strings_speak_of_the_project_only():
    found = []
    for doc in DOCS:
        for i, line in enumerate(doc.read_text().splitlines(), 1):
            found += [f"{doc.relative_to(ROOT)}:{i}: {what}: {m!r}" for what, m in _offences(line, FORBIDDEN + HISTORY)]
    for py in sorted([*(ROOT / "manualbp").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        for line, s in _strings(py):
            found += [f"{py.relative_to(ROOT)}:{line}: {what}: {m!r}" for what, m in _offences(s)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("text, hits", [
    ("This session measured it on the lent H100.", 2), ("I did not search.", 1), ("results here", 1),
    ("see ../shared/data", 1), ("Eager speed (issue 14)", 1), ("SPEC's table", 1),
    ("the batch norm layer here-after", 1), ("Case I (sin) does not train", 0), ("where the run is", 0),
    ("the project's earlier report blamed", 1), ("named `full` before commit 1", 1), ("interrupted once and", 1),
    ("an earlier epoch", 0), ("the preset then named `real`, now `sound-gpu`", 1), ("added since.", 1),
    ("4 runs (resumed once from its checkpoints)", 1), ("in this run, missing", 1),
    ("run folders outside the checkout", 1), ("the runs below were made in a folder outside the checkout", 1),
    ("the next runs to make", 1), ("resumes an interrupted run to the same numbers", 0), ("this running mean", 0),
    ("runs in a folder outside the repository", 0),
])
def test_the_check_sees_the_phrases(text, hits):
    assert len(list(_offences(text, FORBIDDEN + HISTORY))) == hits


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_every_relative_link_and_image_exists():
    missing = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+://|mailto:|#", target):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif "#" in target and path.suffix == ".md" and target.split("#")[1] not in _anchors(path):
                missing.append(f"{doc.relative_to(ROOT)} -> {target} (no such heading)")
    assert not missing, "\n".join(missing)


def _anchors(path: Path) -> set:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    out, code = set(), False
    for line in path.read_text().splitlines():
        code ^= line.startswith("```")            # a "# comment" inside a fenced block is no heading
        m = None if code else re.match(r"#{1,6} (.+)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def test_anchors_follow_github():
    pages = ROOT / "docs" / "experiments"
    found = _anchors(pages / "optimizers.md") | _anchors(pages / "whitening.md") | _anchors(pages / "zca.md")
    want = {"results-on-a-cpu-budget-article-cpu-and-sound-cpu", "the-papers-claims", "every-variant-seeds-0-2"}
    assert want <= found
    assert "make-zca-quick-preset" not in found and not any(a.startswith("make-") for a in found)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_docstring_examples_run():
    import doctest

    import torch

    import manualbp.functional.whitening as whitening
    torch.manual_seed(0)
    res = doctest.testmod(whitening, extraglobs={"torch": torch, "zca_whiten": whitening.zca_whiten})
    assert res.attempted >= 3 and res.failed == 0


def test_public_api_has_docstrings():
    """Every public function and class of the package's API states what it does (not the generic
    docstring a class inherits from nn.Module)."""
    import inspect

    import torch

    import manualbp.functional as F
    import manualbp.models as Mo
    import manualbp.nn as N
    import manualbp.optim as O
    import manualbp.train as T
    missing = []
    for mod in (F, N, Mo, O, T):
        for name in getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")]):
            obj = getattr(mod, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not obj.__module__.startswith("manualbp"):
                continue
            doc = obj.__doc__ or ""
            if len(doc.strip()) < 20 or doc == torch.nn.Module.__doc__:
                missing.append(f"{mod.__name__}.{name}")
    assert not missing, missing


def test_license_and_citation_agree_with_the_package():
    """The README's license is the LICENSE file's and the package's; CITATION.cff names the package's version."""
    import configparser

    import manualbp
    readme = (ROOT / "README.md").read_text()
    assert "License: MIT" in readme
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["license"] == "MIT"
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["authors"]
    assert cff["version"] == manualbp.__version__
