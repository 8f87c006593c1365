import os

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def shared_data():
    """The offline data directory; tests that need real data are skipped without it."""
    from helpers import data

    folder = data.data_dir()
    if folder is None:
        pytest.skip(
            "no data directory "
            "(set BOOK_DATA_DIR or put ../shared/data beside the repo)"
        )
    return folder


def _serve(folder):
    import functools
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{server.server_address[1]}"


def _servers():
    """Serve a folder with ``http.server`` on 127.0.0.1 (port 0, a thread); its URL.

    ``serve_folder(path)`` may be called several times; all servers stop when the
    fixture ends (the test, or the session for ``serve_folder_session``).
    """
    running = []

    def start(folder):
        server, thread, url = _serve(folder)
        running.append((server, thread))
        return url

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


serve_folder = pytest.fixture(_servers, name="serve_folder")
serve_folder_session = pytest.fixture(
    _servers, scope="session", name="serve_folder_session"
)


@pytest.fixture
def source_mirror(shared_data, serve_folder, tmp_path, monkeypatch):
    """A loopback mirror of ``<data dir>/sources`` with an empty data dir and cache.

    Sets ``BOOK_DATA_MIRROR`` to the server, ``BOOK_DATA_DIR`` to an empty folder and
    ``BOOK_CACHE_DIR`` to an empty cache; returns ``(url, cache_path, sources_path)``.
    """
    sources = shared_data / "sources"
    if not sources.is_dir():
        pytest.skip(f"no {sources} (the upstream source files)")
    url = serve_folder(sources)
    (tmp_path / "empty-data").mkdir()
    monkeypatch.setenv("BOOK_DATA_DIR", str(tmp_path / "empty-data"))
    monkeypatch.setenv("BOOK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BOOK_DATA_MIRROR", url)
    return url, tmp_path / "cache", sources
