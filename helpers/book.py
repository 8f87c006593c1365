"""The book's own Sphinx extension: tables the build computes, and launch plumbing.

Jupyter Book loads it through ``sphinx.extra_extensions`` in ``_config.yml``:

- ``{book-fast-presets}`` (directive): what the ``fast`` preset changes in each chapter,
  read from the chapter's parameters cell and the ``if fast:`` block that follows it;
- ``{book-clone-steps}`` (directive): how to clone and run, with the repository URL
  of ``_config.yml`` (the one every link and button uses);
- ``{book-verdict-rule}`` (directive): the verdict rule of the results tables
  (``helpers.chapter.VERDICT_RULE``), for the intro, which pastes every chapter's table;
- ``{book-runtimes}`` (directive): each chapter's run time with its default parameters
  as this build recorded it (myst-nb's execution data; with jupyter-cache, the time of
  the run that produced the cached outputs) beside its run time with ``fast`` (the
  papermill duration stored in the committed reference notebook);
- ``{book-runtime}`` (directive): the same for the current chapter only, one sentence
  for the box at the top of the chapter;
- every downloadable chapter notebook (``_sources/<page>.ipynb``) starts with an install
  cell, and the Colab button opens that notebook as published with the site (Colab reads
  ``.ipynb`` files only, and has no copy of ``helpers``).

The functions without Sphinx (``book_chapters``, ``fast_preset``, ``fast_runtime``,
``install_cell``) are what the tests check.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The branch the workflow publishes the built site to (.github/workflows/book.yml).
PAGES_BRANCH = "gh-pages"


# --------------------------------------------------------------- what the build reads


def book_chapters(root: str | Path = REPO_ROOT) -> list[str]:
    """The chapter names in ``_toc.yml`` order (files under ``chapters/``)."""
    import yaml

    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    names = []
    for part in toc.get("parts", []):
        for entry in part.get("chapters", []):
            file = str(entry.get("file", ""))
            if file.startswith("chapters/"):
                names.append(Path(file).stem)
    return names


def _code_cells(path: Path) -> list:
    import jupytext

    return [c for c in jupytext.read(path).cells if c.cell_type == "code"]


def _fast_block(source: str) -> str:
    """The ``if fast:`` statement at the top level of ``source``, with its body."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("if fast:"):
            block = [line]
            for nxt in lines[i + 1 :]:
                if nxt.strip() and not nxt[0].isspace():
                    break
                block.append(nxt)
            return "\n".join(block)
    return ""


def fast_preset(chapter: str, root: str | Path = REPO_ROOT) -> list[dict]:
    """What ``fast=True`` changes in ``chapters/<chapter>.md``.

    Executes the chapter's ``parameters`` cell (literals only) and the ``if fast:``
    block at the top of the next code cell, once with ``fast=False`` and once with
    ``fast=True``, and returns ``[{"parameter", "default", "fast"}]`` for every value
    that differs, in the order the parameters cell defines them.
    """
    path = Path(root) / "chapters" / f"{chapter}.md"
    if not path.is_file():
        raise FileNotFoundError(f"No chapter {chapter!r}: {path} does not exist.")
    cells = _code_cells(path)
    idx = next(
        (i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])),
        None,
    )
    if idx is None:
        raise ValueError(f"{path} has no code cell tagged 'parameters'.")
    block = _fast_block(cells[idx + 1].source) if idx + 1 < len(cells) else ""
    if not block:
        raise ValueError(
            f"{path}: the cell after the parameters cell does not start its fast "
            "preset with a top-level 'if fast:' block."
        )
    base: dict = {}
    exec(cells[idx].source, {}, base)  # noqa: S102 - the book's own parameters cell
    if "fast" not in base:
        raise ValueError(f"{path}: the parameters cell defines no 'fast'.")
    runs = {}
    for flag in (False, True):
        env = {**base, "fast": flag}
        exec(block, {}, env)  # noqa: S102 - the book's own fast preset
        runs[flag] = env
    names = list(base) + [n for n in runs[True] if n not in base]
    return [
        {"parameter": n, "default": runs[False].get(n), "fast": runs[True].get(n)}
        for n in names
        if n != "fast" and runs[False].get(n) != runs[True].get(n)
    ]


def fast_runtime(name: str, root: str | Path = REPO_ROOT) -> tuple[float, str] | None:
    """``(seconds, date)`` of the committed fast-preset run of ``name``.

    Read from the papermill metadata of ``tests/reference/<name>.ipynb`` (``make
    reference`` writes it); ``None`` when the notebook or its duration is missing.
    """
    path = Path(root) / "tests" / "reference" / f"{name}.ipynb"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    if meta.get("duration") is None:
        return None
    return float(meta["duration"]), str(meta.get("start_time", ""))[:10]


def install_cell(repository_url: str) -> dict:
    """A notebook code cell that makes ``import helpers`` work on Colab (or anywhere
    the book's package is missing): clone the repository, install it with its
    dependencies, put it on ``sys.path``. It does nothing where ``helpers`` imports."""
    folder = json.dumps(repository_url.rstrip("/").rsplit("/", 1)[-1])
    url = json.dumps(repository_url)
    source = "\n".join(
        [
            "# Colab, or any Python without this book's code: clone the repository",
            "# and install its package (helpers) with its dependencies. Run this",
            "# cell first; it does nothing where `import helpers` already works.",
            "import importlib.util, os, subprocess, sys",
            'if importlib.util.find_spec("helpers") is None:',
            f"    if not os.path.isdir({folder}):",
            f'        subprocess.run(["git", "clone", "--depth", "1", {url}],',
            "                       check=True)",
            "    subprocess.run(",
            f'        [sys.executable, "-m", "pip", "install", "-q", "-e", {folder}],',
            "        check=True,",
            "    )",
            f"    sys.path.insert(0, os.path.abspath({folder}))",
        ]
    )
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": "book-install",
        "metadata": {"tags": ["book-install"]},
        "outputs": [],
        "source": source,
    }


def add_install_cell(path: str | Path, repository_url: str) -> bool:
    """Put :func:`install_cell` first in the notebook at ``path`` (once); ``True`` if
    the notebook changed."""
    path = Path(path)
    nb = json.loads(path.read_text())
    cells = nb.setdefault("cells", [])
    if cells and "book-install" in cells[0].get("metadata", {}).get("tags", []):
        return False
    cells.insert(0, install_cell(repository_url))
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    return True


# ------------------------------------------------------------------ Sphinx side


def _fmt(value) -> str:
    return "None" if value is None else repr(value)


def _table(header: list[str], rows: list[list[str]]):
    table = nodes.table(classes=["colwidths-auto"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)

    def row(cells):
        r = nodes.row()
        for text in cells:
            r += nodes.entry("", nodes.paragraph(text=str(text)))
        return r

    head = nodes.thead()
    head += row(header)
    body = nodes.tbody()
    for cells in rows:
        body += row(cells)
    group += head
    group += body
    return table


def _runtime_rows(
    exec_data: dict, root: Path, names: list[str] | None = None
) -> list[list[str]]:
    from datetime import UTC, datetime

    rows = []
    for name in book_chapters(root) if names is None else names:
        data = exec_data.get(f"chapters/{name}") or {}
        if data.get("runtime") is None:
            default = "not executed in this build"
        else:
            default = f"{data['runtime']:.0f}"
            if data.get("mtime"):
                when = datetime.fromtimestamp(data["mtime"], tz=UTC)
                default += f" (run {when:%Y-%m-%d})"
            if data.get("succeeded") is False:
                default += " failed"
        fast = fast_runtime(name, root)
        fast_text = "no reference notebook" if fast is None else f"{fast[0]:.0f}"
        if fast is not None and fast[1]:
            fast_text += f" (run {fast[1]})"
        rows.append([name, default, fast_text])
    return rows


class RuntimesNode(nodes.General, nodes.Element):
    """Placeholder for the runtime table, filled once every chapter has run."""


class FastPresets(SphinxDirective):
    """``{book-fast-presets}``: what ``fast`` changes, chapter by chapter."""

    def run(self):
        root = Path(self.env.srcdir)
        rows = []
        for name in book_chapters(root):
            self.env.note_dependency(str(root / "chapters" / f"{name}.md"))
            for r in fast_preset(name, root):
                rows.append([name, r["parameter"], _fmt(r["default"]), _fmt(r["fast"])])
        return [_table(["chapter", "parameter", "default", "fast"], rows)]


class Runtimes(SphinxDirective):
    """``{book-runtimes}``: default vs fast run time of every chapter."""

    def run(self):
        from myst_nb.sphinx_ import NbMetadataCollector

        root = Path(self.env.srcdir)
        # myst-nb rewrites the pages holding an execution table when a notebook re-runs
        NbMetadataCollector.set_doc_data(
            self.env, self.env.docname, "has_exec_table", True
        )
        for name in book_chapters(root):
            self.env.note_dependency(
                str(root / "tests" / "reference" / f"{name}.ipynb")
            )
        return [RuntimesNode()]


class Runtime(SphinxDirective):
    """``{book-runtime}``: one line with this chapter's run time, default and ``fast``
    (for the box at the top of a chapter; the chapter is the current page)."""

    def run(self):
        from myst_nb.sphinx_ import NbMetadataCollector

        root = Path(self.env.srcdir)
        name = Path(self.env.docname).name
        NbMetadataCollector.set_doc_data(
            self.env, self.env.docname, "has_exec_table", True
        )
        self.env.note_dependency(str(root / "tests" / "reference" / f"{name}.ipynb"))
        return [RuntimesNode(chapter=name)]


def runtime_sentence(row: list[str]) -> str:
    """One chapter's runtime row as the sentence of its top box."""
    _, default, fast = row
    return (
        f"Run time in seconds: {default} with the default parameters (this build), "
        f"{fast} with fast=True (the committed reference run)."
    )


class RuntimesTransform(SphinxPostTransform):
    """Fills :class:`RuntimesNode` after all chapters ran (order does not matter)."""

    default_priority = 8

    def run(self, **kwargs):
        from myst_nb.sphinx_ import NbMetadataCollector

        meta = NbMetadataCollector.get_doc_data(self.env)
        exec_data = {doc: d.get("exec_data") for doc, d in meta.items()}
        header = ["chapter", "default parameters: seconds", "fast: seconds"]
        root = Path(self.env.srcdir)
        for node in list(self.document.findall(RuntimesNode)):
            if node.get("chapter"):
                row = _runtime_rows(exec_data, root, [node["chapter"]])[0]
                node.replace_self(nodes.paragraph(text=runtime_sentence(row)))
            else:
                node.replace_self(_table(header, _runtime_rows(exec_data, root)))


def clone_steps(repository_url: str) -> str:
    """The shell lines that clone the repository and run the book's two commands."""
    folder = repository_url.rstrip("/").rsplit("/", 1)[-1]
    return "\n".join(
        [
            f"git clone {repository_url}",
            f"cd {folder}",
            "make book   # install the pinned stack, run the chapters, build the HTML",
            "make test   # every chapter (fast) against its reference, then the tests",
        ]
    )


class CloneSteps(SphinxDirective):
    """``{book-clone-steps}``: clone and run, with the repository URL of _config.yml."""

    def run(self):
        url = self.config.html_theme_options.get("repository_url", "")
        if not url:
            raise self.error("book-clone-steps needs repository: url: in _config.yml")
        text = clone_steps(url)
        return [nodes.literal_block(text, text, language="bash")]


class VerdictRule(SphinxDirective):
    """``{book-verdict-rule}``: :data:`helpers.chapter.VERDICT_RULE` (Markdown), the
    rule under every results table, for pages that paste the chapters' tables."""

    def run(self):
        from docutils.statemachine import StringList

        from .chapter import VERDICT_RULE

        container = nodes.container()
        self.state.nested_parse(
            StringList([VERDICT_RULE]), self.content_offset, container
        )
        return container.children


def _launch_fixes(app, pagename, templatename, context, doctree):
    """Install cell in the downloadable notebook; the Colab button opens it."""
    if not context.get("ipynb_source"):
        return
    repo_url = app.config.html_theme_options.get("repository_url", "")
    nb_path = Path(app.outdir) / "_sources" / context["ipynb_source"]
    if repo_url and nb_path.is_file():
        add_install_cell(nb_path, repo_url)
    org_repo = repo_url.rstrip("/").split("github.com/")[-1]
    colab = f"/github/{org_repo}/blob/{PAGES_BRANCH}/_sources/{pagename}.ipynb"
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []) or []:
            if button.get("text") == "Colab":
                button["url"] = button["url"].split("/github/")[0] + colab


def _unique_scripts(app, pagename, templatename, context, doctree):
    """Drop repeated script tags: sphinx-thebe adds its inline configuration twice in
    Jupyter Book builds, and the second ``const`` declaration is a console error."""
    if "script_files" not in context:
        return
    seen, unique = set(), []
    for js in context["script_files"]:
        name = getattr(js, "filename", js) or ""  # None and "" both mean inline
        key = (str(name), repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.add_node(RuntimesNode)
    app.add_directive("book-fast-presets", FastPresets)
    app.add_directive("book-runtimes", Runtimes)
    app.add_directive("book-runtime", Runtime)
    app.add_directive("book-clone-steps", CloneSteps)
    app.add_directive("book-verdict-rule", VerdictRule)
    app.add_post_transform(RuntimesTransform)
    # after sphinx-book-theme's launch buttons (priority 501), which copy the notebook
    app.connect("html-page-context", _launch_fixes, priority=510)
    app.connect("html-page-context", _unique_scripts, priority=510)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
