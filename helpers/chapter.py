"""The chapter contract: output folders, ``metrics.json``, and running chapters with
parameters.

Every chapter writes its headline figures with :func:`write_metrics` into its output
folder (default ``_build/outputs/<chapter>`` in the repository). Run a chapter from the
command line::

    python -m helpers.chapter cell_typing -p dataset pbmc68k_reduced \
        -p label_key bulk_labels

which converts ``chapters/<name>.md`` to a notebook (jupytext) and executes it with
papermill, writing ``<output_dir>/<name>.ipynb`` beside ``metrics.json``.
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


def resolve_output_dir(output_dir: str | Path | None, chapter: str) -> Path:
    """The chapter's output folder, created if needed (``_build/outputs/<chapter>``)."""
    out = Path(output_dir) if output_dir else REPO_ROOT / "_build" / "outputs" / chapter
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_metrics(metrics: dict, output_dir: str | Path) -> Path:
    """Write ``metrics.json`` (numpy and pandas values converted; NaN becomes null).

    A ``metrics.json`` that this function did not write is never overwritten: pick
    another ``output_dir`` instead.
    """
    path = Path(output_dir) / "metrics.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        if not isinstance(old, dict) or old.get("_about") != MARK:
            raise FileExistsError(
                f"{path} exists and was not written by this book; refusing to "
                "overwrite it. "
                "Choose another output_dir."
            )
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
    out = dest / f"{name}.ipynb"
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
    src = notebook_for(name, out / "_src")
    executed = out / f"{name}.ipynb"
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
