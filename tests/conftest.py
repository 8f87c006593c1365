import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def shared_data():
    """The offline data directory; tests that need real data are skipped without it."""
    from helpers import data

    folder = data.data_dir()
    if folder is None:
        pytest.skip("no data directory (set BOOK_DATA_DIR or put ../shared/data beside the repo)")
    return folder
