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
from pathlib import Path

from .runtime import jsonable

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = REPO_ROOT / "chapters"
MARK = "written by helpers.chapter"
#: The manifest of files the book wrote in a folder (one per folder).
MANIFEST = ".written-by-book.json"


def resolve_output_dir(output_dir: str | Path | None, chapter: str) -> Path:
    """The chapter's output folder, created if needed (``_build/outputs/<chapter>``)."""
    out = Path(output_dir) if output_dir else REPO_ROOT / "_build" / "outputs" / chapter
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


def run_chapter(
    name: str,
    parameters: dict | None = None,
    output_dir: str | Path | None = None,
    kernel: str = "python3",
) -> Path:
    """Execute a chapter with papermill; returns the executed notebook path."""
    import papermill as pm

    params = dict(parameters or {})
    out = resolve_output_dir(output_dir or params.get("output_dir"), name)
    params["output_dir"] = str(out.resolve())
    executed = check_writable(out / f"{name}.ipynb")  # before any work
    src = notebook_for(name, out / "_src")
    executed = output_path(executed)
    pm.execute_notebook(
        str(src),
        str(executed),
        parameters=params,
        kernel_name=kernel,
        cwd=str(CHAPTERS),
        progress_bar=False,
    )
    return executed


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description="Run a chapter of the book with parameters (papermill)."
    )
    ap.add_argument("chapter", nargs="+", help="chapter name(s), e.g. cell_typing")
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
    args = ap.parse_args(argv)
    params = {k: _value(v) for k, v in args.param}
    if args.fast:
        params["fast"] = True
    for name in args.chapter:
        out = (
            Path(args.output_dir) / name
            if args.output_dir and len(args.chapter) > 1
            else args.output_dir
        )
        print(run_chapter(name, params, out))


if __name__ == "__main__":
    main()
