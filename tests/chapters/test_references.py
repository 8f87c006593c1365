"""The reference notebooks that `make test` re-executes are the chapters
as they are now.

nbval executes a reference notebook's own code and compares its outputs with the stored
ones, so a changed helper fails there; this test catches a changed chapter, whose
reference must then be regenerated on purpose (`make reference`) and reviewed as a diff.
"""

from helpers import chapter


def test_every_reference_matches_its_chapter():
    stale = chapter.stale_references()
    assert not stale, f"stale reference notebooks (run `make reference`): {stale}"


def test_references_hold_no_images():
    import nbformat

    for name in chapter.REFERENCES:
        path = chapter.REFERENCE_DIR / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                assert not set(out.get("data", {})) & {"image/png", "image/jpeg"}, name
