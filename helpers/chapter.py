"""The chapter contract: output folders, ``metrics.json``, and running chapters with
parameters.

Every chapter writes its headline figures with :func:`write_metrics` into its output
folder (default ``_build/outputs/<chapter>`` in the repository). Run a chapter from the
command line::

    python -m helpers.chapter cell_typing -p dataset pbmc68k_reduced \
        -p label_key bulk_labels

which converts ``chapters/<name>.md`` to a notebook (jupytext) and executes it with
papermill, writing ``<output_dir>/<name>.ipynb`` beside ``metrics.json``.

The book never overwrites a file it did not write. Every file it writes into an
output folder (the executed notebook, ``_src/<name>.ipynb``, ``metrics.json``, a
chapter's pages such as ``concept_explorer.html``) goes through :func:`output_path`,
which checks the file with :func:`check_writable` and lists it in the folder's
manifest ``.written-by-book.json`` (:data:`MANIFEST`). A file that exists and is not
in the manifest raises ``FileExistsError`` naming it and the fix. Model caches
(``scvi_<hash>`` folders) are reused, not overwritten.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path

from .runtime import jsonable

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = REPO_ROOT / "chapters"
MARK = "written by helpers.chapter"
#: The manifest of files the book wrote in a folder (one per folder).
MANIFEST = ".written-by-book.json"


def resolve_output_dir(output_dir: str | Path | None, chapter: str) -> Path:
    """The chapter's output folder, created if needed (``_build/outputs/<chapter>``).

    A relative ``output_dir`` is taken from the repository root, so a notebook writes to
    the same place wherever it is executed from (the CLI passes absolute paths for
    folders outside the repository).
    """
    out = Path(output_dir) if output_dir else Path("_build") / "outputs" / chapter
    out = out if out.is_absolute() else REPO_ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    return out


def _manifest_path(path: Path) -> Path:
    return path.parent / MANIFEST


def _manifest(folder: Path) -> set[str]:
    try:
        names = json.loads((folder / MANIFEST).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return set(names) if isinstance(names, list) else set()


def _book_metrics(path: Path) -> bool:
    """A ``metrics.json`` with the book's mark (written before the manifest existed)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(old, dict) and old.get("_about") == MARK


def _book_notebook(path: Path) -> bool:
    """A notebook the book wrote before the manifest existed: the jupytext conversion
    in ``_src/``, or a papermill run of it (its ``input_path`` is that conversion)."""
    try:
        meta = json.loads(path.read_text()).get("metadata", {})
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False
    if path.parent.name == "_src":
        return "jupytext" in meta
    source = str(meta.get("papermill", {}).get("input_path", ""))
    return Path(source).parent.name == "_src" and Path(source).name == path.name


def written_by_book(path: str | Path) -> bool:
    """True when ``path`` is listed in its folder's manifest (:data:`MANIFEST`); also,
    for folders written before the manifest existed, a ``metrics.json`` carrying the
    book's mark or a notebook the book wrote (:func:`_book_notebook`)."""
    path = Path(path)
    if path.name in _manifest(path.parent):
        return True
    if path.name == "metrics.json":
        return _book_metrics(path)
    return path.suffix == ".ipynb" and _book_notebook(path)


def check_writable(path: str | Path) -> Path:
    """Raise ``FileExistsError`` if ``path`` exists and the book did not write it.

    The one rule for every file a chapter writes into its output folder: a new file,
    or one the book wrote there before (:func:`written_by_book`), may be written.
    """
    path = Path(path)
    if path.exists() and not written_by_book(path):
        raise FileExistsError(
            f"{path} exists and was not written by this book; refusing to overwrite "
            "it. Choose another output folder (-o/--output-dir, or the output_dir "
            "parameter), or move the file away."
        )
    return path


def output_path(path: str | Path) -> Path:
    """Check ``path`` with :func:`check_writable` and list it in the folder's manifest;
    returns ``path``. Call it before writing any file into an output folder."""
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = _manifest(path.parent)
    if path.name not in names:
        manifest = {"_about": MARK, "files": sorted(names | {path.name})}
        _manifest_path(path).write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def write_metrics(metrics: dict, output_dir: str | Path) -> Path:
    """Write ``metrics.json`` (numpy and pandas values converted; NaN becomes null).

    A ``metrics.json`` that the book did not write is never overwritten
    (:func:`check_writable`): pick another ``output_dir`` instead.
    """
    path = output_path(Path(output_dir) / "metrics.json")
    out = {
        "_about": MARK,
        "_written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    out.update(jsonable(metrics))
    path.write_text(json.dumps(out, indent=2, sort_keys=False) + "\n")
    return path


def notebook_for(name: str, dest: Path) -> Path:
    """Convert ``chapters/<name>.md`` to ``dest/<name>.ipynb`` with jupytext."""
    import jupytext

    src = CHAPTERS / f"{name}.md"
    if not src.is_file():
        known = sorted(p.stem for p in CHAPTERS.glob("*.md"))
        raise FileNotFoundError(f"No chapter {name!r}. Known chapters: {known}.")
    dest.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(src)
    nb.metadata.setdefault(
        "kernelspec",
        {"name": "python3", "display_name": "Python 3", "language": "python"},
    )
    out = output_path(dest / f"{name}.ipynb")
    jupytext.write(nb, out)
    return out


def _portable(path: Path) -> str:
    """``path`` relative to the repository root when inside it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def run_chapter(
    name: str,
    parameters: dict | None = None,
    output_dir: str | Path | None = None,
    kernel: str = "python3",
    *,
    notebook: str | Path | None = None,
) -> Path:
    """Execute a chapter with papermill; returns the executed notebook path.

    The executed notebook goes to ``<output_dir>/<name>.ipynb`` unless ``notebook``
    names another path. A relative ``output_dir`` is taken from the repository root.
    """
    import papermill as pm

    params = dict(parameters or {})
    out = resolve_output_dir(output_dir or params.get("output_dir"), name)
    params["output_dir"] = _portable(out)
    if notebook:  # the caller owns that path (write_reference): no guard, no manifest
        executed = Path(notebook)
        executed.parent.mkdir(parents=True, exist_ok=True)
    else:
        executed = check_writable(out / f"{name}.ipynb")  # before any work
    src = notebook_for(name, out / "_src")
    executed = executed if notebook else output_path(executed)
    pm.execute_notebook(
        str(src),
        str(executed),
        parameters=params,
        kernel_name=kernel,
        cwd=str(CHAPTERS),
        progress_bar=False,
    )
    return executed


# ------------------------------------------------------------------ reference notebooks

#: Committed fast-mode executions; ``make test`` compares a fresh run with them (nbval).
REFERENCE_DIR = REPO_ROOT / "tests" / "reference"
#: name of each reference → (chapter, parameters beyond ``fast=True``). The second
#: cell-typing run is the README's rerun on another labelled dataset (parameters only).
REFERENCES: dict[str, tuple[str, dict]] = {
    "cell_typing": ("cell_typing", {}),
    "frequencies": ("frequencies", {}),
    "perturbation": ("perturbation", {}),
    "concepts": ("concepts", {}),
    "stability": ("stability", {}),
    "probes": ("probes", {}),
    "cell_typing_pbmc68k": (
        "cell_typing",
        {"dataset": "pbmc68k_reduced", "label_key": "bulk_labels", "layer": None},
    ),
}
#: Output types nbval does not compare (it skips images by default); dropped from the
#: references so that the repository holds text, not pictures.
_UNCOMPARED = ("image/png", "image/jpeg", "image/svg+xml")


def write_reference(name: str) -> Path:
    """Execute reference ``name`` (fast preset) into ``tests/reference/<name>.ipynb``.

    Its outputs go to ``_build/test-chapters/<name>`` (relative to the repository, so a
    re-execution by nbval anywhere writes there too); images are dropped (nbval does
    not compare them).
    """
    import nbformat

    if name not in REFERENCES:
        raise KeyError(
            f"No reference {name!r}. Known references: {sorted(REFERENCES)}."
        )
    chapter, params = REFERENCES[name]
    path = REFERENCE_DIR / f"{name}.ipynb"
    run_chapter(
        chapter,
        {**params, "fast": True},
        Path("_build") / "test-chapters" / name,
        notebook=path,
    )
    nbformat.write(_portable_reference(nbformat.read(path, as_version=4)), path)
    return path


def _portable_reference(nb):
    """``nb`` without image outputs, with numbered cell ids (jupytext draws random ones)
    and repository-relative papermill paths, so that regenerating it diffs only what
    changed."""
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
        for output in cell.get("outputs", []):
            for key in _UNCOMPARED:
                output.get("data", {}).pop(key, None)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = _portable(Path(meta[key]))
    return nb


def _code_cells(nb) -> list[str]:
    return [
        c.source.strip()
        for c in nb.cells
        if c.cell_type == "code"
        and "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]


def stale_references() -> dict[str, str]:
    """References whose code no longer matches their chapter: ``{name: why}``.

    nbval executes a reference notebook's own code; this check ties that code to
    ``chapters/<chapter>.md``, so a changed chapter also fails until ``make reference``.
    """
    import jupytext
    import nbformat

    stale = {}
    for name, (chapter, _) in REFERENCES.items():
        path = REFERENCE_DIR / f"{name}.ipynb"
        if not path.is_file():
            stale[name] = f"{path} is missing"
            continue
        ref = _code_cells(nbformat.read(path, as_version=4))
        now = _code_cells(jupytext.read(CHAPTERS / f"{chapter}.md"))
        if ref != now:
            first = next(
                (i for i, (a, b) in enumerate(zip(ref, now)) if a != b),
                min(len(ref), len(now)),
            )
            stale[name] = (
                f"code cell {first} differs from chapters/{chapter}.md "
                f"({len(ref)} code cells in the reference, {len(now)} now)"
            )
    return stale


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description="Run a chapter of the book with parameters (papermill)."
    )
    ap.add_argument("chapter", nargs="*", help="chapter name(s), e.g. cell_typing")
    ap.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter; VALUE is parsed as JSON when it can be (true, 3, 0.1), "
        "else a string",
    )
    ap.add_argument("--fast", action="store_true", help="use the chapter's fast preset")
    ap.add_argument(
        "-o",
        "--output-dir",
        default=None,
        help="output folder (default _build/outputs/<chapter>)",
    )
    ap.add_argument(
        "--reference",
        action="store_true",
        help="regenerate the reference notebooks in tests/reference (chapter names "
        "optional: default all of them); what `make reference` runs",
    )
    ap.add_argument(
        "--glance",
        action="store_true",
        help="print the book-wide results-at-a-glance table from the metrics.json "
        "under -o (default _build/outputs)",
    )
    args = ap.parse_args(argv)
    if args.glance:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(book_glance(args.output_dir).to_string(index=False))
        return
    if args.reference:
        for name in args.chapter or sorted(REFERENCES):
            print(write_reference(name))
        return
    if not args.chapter:
        ap.error("name at least one chapter (or pass --reference)")
    params = {k: _value(v) for k, v in args.param}
    if args.fast:
        params["fast"] = True
    # -o is relative to where the command runs (inside a notebook: to the repository)
    base = Path(args.output_dir).resolve() if args.output_dir else None
    for name in args.chapter:
        out = base / name if base and len(args.chapter) > 1 else base
        print(run_chapter(name, params, out))


# ------------------------------------------------------------------ results at a glance

#: How a figure of ours is judged against the study's figure (shown under every table).
VERDICT_RULE = (
    "Verdict rule: *reproduced* when ours is within ± tolerance of the reference "
    "figure; *better* / *not reproduced* when it lies beyond the tolerance on the "
    "good / bad side (for figures with no good side, any figure beyond the tolerance "
    "is *not reproduced*); *not comparable* when the study gives no figure for this "
    "setting, or when the note names a difference of setting that decides the figure."
)


@dataclass(frozen=True)
class Claim:
    """One figure of a reference study set beside ours.

    ``theirs=None`` means the study reports no comparable number. ``higher_is_better``
    is ``True``/``False`` for figures with a good side, ``None`` for figures only to be
    matched (an eigenvalue, a correlation the study reports). ``comparable=False``
    shows the study's figure but gives the verdict *not comparable*; ``note`` then says
    why (different data, model or scale).
    """

    figure: str
    theirs: float | None
    ours: float | None
    tolerance: float
    source: str
    higher_is_better: bool | None = True
    comparable: bool = True
    note: str = ""

    def verdict(self) -> str:
        """The verdict by :data:`VERDICT_RULE`."""
        if self.theirs is None or self.ours is None or not self.comparable:
            return "not comparable"
        gap = float(self.ours) - float(self.theirs)
        if abs(gap) <= self.tolerance:
            return "reproduced"
        if self.higher_is_better is None:
            return "not reproduced"
        return "better" if (gap > 0) == self.higher_is_better else "not reproduced"

    def record(self) -> dict:
        """The claim and its verdict as a JSON-ready dict (for ``metrics.json``)."""
        rec = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("theirs", "ours"):
            rec[k] = None if rec[k] is None else float(rec[k])
        return {**rec, "verdict": self.verdict()}


GLANCE_COLUMNS = [
    "figure",
    "source",
    "reference",
    "ours",
    "tolerance",
    "verdict",
    "note",
]


def glance(claims: list[Claim], digits: int = 3):
    """Results at a glance: figure, source, reference, ours, tolerance, verdict, note
    (a DataFrame, one row per claim, values at ``digits`` decimals)."""
    return _glance_table([c.record() for c in claims], digits)


def _glance_table(records: list[dict], digits: int = 3):
    import pandas as pd

    def whole(v) -> bool:
        return v is None or float(v).is_integer()

    def fmt(v, places):
        return "—" if v is None else f"{float(v):.{places}f}"

    rows = []
    for r in records:
        # a count (reference, ours and tolerance all whole numbers) shows no decimals
        count = all(whole(r[k]) for k in ("theirs", "ours", "tolerance"))
        places = 0 if count else digits
        rows.append(
            {
                **({"chapter": r["chapter"]} if "chapter" in r else {}),
                "figure": r["figure"],
                "source": r["source"],
                "reference": fmt(r["theirs"], places),
                "ours": fmt(r["ours"], places),
                "tolerance": f"±{r['tolerance']:g}",
                "verdict": r["verdict"],
                "note": r.get("note", ""),
            }
        )
    columns = (["chapter"] if rows and "chapter" in rows[0] else []) + GLANCE_COLUMNS
    return pd.DataFrame(rows, columns=columns)


class _IndexFreeTable:
    """A DataFrame shown without its row index (HTML and text), for pasting."""

    def __init__(self, table):
        self.table = table

    def _repr_html_(self) -> str:
        return self.table.to_html(index=False, border=0, classes="dataframe glance")

    def __repr__(self) -> str:
        return self.table.to_string(index=False)


def glue_glance(claims: list[Claim], *, key: str = "glance", digits: int = 3):
    """Glue a chapter's results-at-a-glance table for the top of its page.

    Glues ``key`` (the table) and ``f"{key}_rule"`` (:data:`VERDICT_RULE`, Markdown),
    which the chapter pastes near its top with ``{glue} glance`` and
    ``{glue:md} glance_rule``, and which the intro page pastes from every chapter.
    Returns the table (end the cell with it, so a notebook reader and nbval see it)
    and, as ``table.attrs["records"]``, the claims for ``metrics["glance"]``.
    """
    from IPython.display import Markdown
    from myst_nb import glue

    if not claims:
        raise ValueError("glue_glance needs at least one Claim")
    table = glance(claims, digits)
    glue(key, _IndexFreeTable(table), display=False)
    glue(f"{key}_rule", Markdown(VERDICT_RULE), display=False)
    table.attrs["records"] = [c.record() for c in claims]
    return table


def glue_numbers(digits: int = 4, **values) -> dict:
    """Glue numbers for a chapter's prose (``{glue:text}`key:.3f```), hidden.

    Integers are glued as integers; other numbers rounded to ``digits`` decimals, so
    that a rerun on another machine glues (and nbval compares) the same text; ``None``
    and NaN become NaN (the prose then reads "nan", not a stale number). Returns the
    glued ``{key: value}``. Raises ``TypeError`` for anything but a number (a glued
    string would show its quotes in ``{glue:text}``).
    """
    import numbers

    import numpy as np
    from myst_nb import glue

    glued = {}
    for key, v in values.items():
        if v is None:
            v = float("nan")
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(
                f"glue_numbers: {key}={v!r} is not a number; glue text with "
                "myst_nb.glue (a Markdown object, shown with {glue:md})."
            )
        v = int(v) if isinstance(v, numbers.Integral) else round(float(v), digits)
        glue(key, v, display=False)
        glued[key] = v
    return glued


def glue_key(prefix: str, name) -> str:
    """The glue key of ``name``'s figure or table in a per-class block:
    ``prefix`` + ``_`` + ``name`` with every run of non-word characters as one ``_``
    (``glue_key("ct_modules", "Ngn3 low EP") == "ct_modules_Ngn3_low_EP"``), which is
    what a chapter's tabs write in ``{glue:figure}``."""
    import re

    return f"{prefix}_{re.sub(r'[^0-9A-Za-z]+', '_', str(name)).strip('_')}"


def glue_figure(prefix: str, name, fig) -> str:
    """Glue ``fig`` hidden under :func:`glue_key` ``(prefix, name)`` and return the key.

    For figures pasted into tabs with ``{glue:figure}`` (numbered caption there). The
    figure stays open, so a notebook still shows it in the cell's output; tag that cell
    ``remove-output`` so the book shows only the captioned copy.
    """
    from myst_nb import glue

    key = glue_key(prefix, name)
    glue(key, fig, display=False)
    return key


def glue_values(**values) -> None:
    """Glue values for a chapter's prose, hidden, as given, except that numpy scalars
    are glued as Python ones: numpy 2's repr (``np.float64(0.92)``) defeats the
    ``{glue:text}`key:.2f``` format. Strings are pasted without quotes."""
    import numpy as np
    from myst_nb import glue

    for key, v in values.items():
        glue(key, v.item() if isinstance(v, np.generic) else v, display=False)


def book_glance(root: str | Path | None = None, digits: int = 3):
    """The book-wide results-at-a-glance table from every chapter's ``metrics.json``
    under ``root`` (default ``_build/outputs``): one row per claim, with its chapter.
    Chapters whose metrics carry no ``glance`` are left out."""
    root = Path(root) if root is not None else REPO_ROOT / "_build" / "outputs"
    records = []
    for path in sorted(root.glob("*/metrics.json")):
        for rec in json.loads(path.read_text()).get("glance", []):
            records.append({"chapter": path.parent.name, **rec})
    if not records:
        raise FileNotFoundError(
            f"no metrics.json with a 'glance' entry under {root}; run the chapters "
            "first (make book, or python -m helpers.chapter NAME)"
        )
    return _glance_table(records, digits)


if __name__ == "__main__":
    main()
