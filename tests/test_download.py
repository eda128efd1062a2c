"""`python -m cxr_core download` without the internet: a local HTTP server on
127.0.0.1 serves small zips in Kaggle layout (nested, with __MACOSX, cut short,
with a member that escapes), and kagglehub is replaced by a stand-in.

Every case checks what is left on disk: the data set in place, or nothing that
looks like one (no target folder, no temp folder beside it).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from cxr_core import data, download
from cxr_core.__main__ import main
from cxr_core.config import UserError

NORMAL_NAMES = [f"IM-{i:04d}-0001.jpeg" for i in range(1, 9)]
PNEUMONIA_NAMES = [f"person{i}_{'bacteria' if i % 2 else 'virus'}_{i}.jpeg" for i in range(1, 9)]


def image_bytes(fmt: str, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), shade).save(buffer, format=fmt)
    return buffer.getvalue()


def kaggle_zip(prefix: str = "chest_xray/", macosx: bool = False, extra: dict[str, bytes] | None = None) -> bytes:
    """A tiny archive in Kaggle layout: train/ and test/, both classes, JPEG and PNG files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for split in ("train", "test"):
            for i, name in enumerate(NORMAL_NAMES):
                archive.writestr(f"{prefix}{split}/NORMAL/{name}", image_bytes("JPEG", 40 + i))
            for i, name in enumerate(PNEUMONIA_NAMES):
                fmt, name = ("PNG", name.replace(".jpeg", ".png")) if i % 3 == 0 else ("JPEG", name)
                archive.writestr(f"{prefix}{split}/PNEUMONIA/{name}", image_bytes(fmt, 160 + i))
            if macosx:
                archive.writestr(f"__MACOSX/{prefix}{split}/NORMAL/._{NORMAL_NAMES[0]}", b"\x00\x05\x16\x07")
                archive.writestr(f"{prefix}{split}/.DS_Store", b"\x00\x00\x00\x01Bud1")
        for name, content in (extra or {}).items():
            archive.writestr(zipfile.ZipInfo(name), content)  # ZipInfo keeps the name as given
    return buffer.getvalue()


IMAGES_PER_ZIP = 2 * (len(NORMAL_NAMES) + len(PNEUMONIA_NAMES))


class ArchiveServer:
    """Serves path -> bytes; a path in `cut_short` announces the full length but sends half and hangs up."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_short: set[str] = set()
        self.gets = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _head(self) -> bytes | None:
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return None
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return body

            def do_HEAD(self):
                self._head()

            def do_GET(self):
                server.gets += 1
                body = self._head()
                if body is None:
                    return
                if self.path in server.cut_short:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # a proxy in the environment must not see these requests
    served = ArchiveServer()
    served.thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def leftovers(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*"))


def assert_nothing_left(out: Path) -> None:
    assert not out.exists(), f"{out} exists after a failed download"
    assert leftovers(out) == []


def assert_one_line(error: UserError) -> None:
    assert "\n" not in str(error), str(error)


# ---------------------------------------------------------------- from a URL


def test_a_url_with_kaggle_nesting_and_macos_junk_is_laid_out_ready_to_use(server, tmp_path):
    server.files["/archive.zip"] = kaggle_zip(prefix="chest_xray/chest_xray/", macosx=True)
    out = tmp_path / "data" / "chest_xray"
    lines = []
    root = download.download(server.url("/archive.zip"), out, echo=lines.append)
    assert root == out / "chest_xray" / "chest_xray"
    scan = data.scan_folder(root)
    assert len(scan.manifest) == IMAGES_PER_ZIP
    assert set(scan.manifest["class_name"]) == {"NORMAL", "PNEUMONIA"}
    assert data.scan_folder(out).root == root  # CXR_DATA_DIR may name the outer folder too
    assert not list(out.rglob("__MACOSX")) and not list(out.rglob(".DS_Store"))
    assert leftovers(out) == []
    size = len(server.files["/archive.zip"])
    assert any(line.startswith(f"downloading {download.human_size(size)} from") for line in lines), lines


def test_a_folder_that_already_holds_the_data_is_kept_and_nothing_is_fetched(server, tmp_path):
    server.files["/archive.zip"] = kaggle_zip()
    out = tmp_path / "chest_xray"
    first = download.download(server.url("/archive.zip"), out, echo=lambda line: None)
    gets = server.gets
    again = download.download(server.url("/archive.zip"), out, echo=lambda line: None)
    assert again == first and server.gets == gets


def test_a_folder_with_other_files_is_refused(server, tmp_path):
    server.files["/archive.zip"] = kaggle_zip()
    out = tmp_path / "chest_xray"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a chest X-ray data set"):
        download.download(server.url("/archive.zip"), out, echo=lambda line: None)
    assert (out / "notes.txt").read_text() == "mine" and server.gets == 0


def test_a_download_cut_short_leaves_nothing_that_looks_complete(server, tmp_path):
    server.files["/archive.zip"] = kaggle_zip()
    server.cut_short.add("/archive.zip")
    out = tmp_path / "chest_xray"
    with pytest.raises(UserError) as caught:
        download.download(server.url("/archive.zip"), out, echo=lambda line: None)
    assert "broke off" in str(caught.value) and "before the end" in str(caught.value)
    assert_one_line(caught.value)
    assert_nothing_left(out)


def test_a_wrong_checksum_is_refused(server, tmp_path):
    server.files["/archive.zip"] = kaggle_zip()
    out = tmp_path / "chest_xray"
    with pytest.raises(UserError, match="not the expected one") as caught:
        download.download(server.url("/archive.zip"), out, sha256="0" * 64, echo=lambda line: None)
    assert hashlib.sha256(server.files["/archive.zip"]).hexdigest() in str(caught.value)  # what it got instead
    assert_one_line(caught.value)
    assert_nothing_left(out)


@pytest.mark.parametrize("evil", ["../escaped.txt", "chest_xray/../../escaped.txt", "/tmp/cxr-escaped.txt"])
def test_a_member_outside_the_target_is_refused_and_nothing_is_written(server, tmp_path, evil):
    server.files["/archive.zip"] = kaggle_zip(extra={evil: b"owned"})
    out = tmp_path / "deep" / "chest_xray"
    with pytest.raises(UserError, match="outside") as caught:
        download.download(server.url("/archive.zip"), out, echo=lambda line: None)
    assert repr(evil) in str(caught.value)
    assert_one_line(caught.value)
    assert_nothing_left(out)
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))
    assert not Path("/tmp/cxr-escaped.txt").exists()


def test_an_archive_that_is_not_the_data_set_is_not_moved_into_place(server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photos/cat.jpeg", image_bytes("JPEG", 100))
    server.files["/other.zip"] = buffer.getvalue()
    out = tmp_path / "chest_xray"
    with pytest.raises(UserError, match="not the chest X-ray data set") as caught:
        download.download(server.url("/other.zip"), out, echo=lambda line: None)
    assert_one_line(caught.value)
    assert_nothing_left(out)


def test_a_missing_url_says_not_found(server, tmp_path):
    out = tmp_path / "chest_xray"
    with pytest.raises(UserError, match="HTTP 404"):
        download.download(server.url("/nothing.zip"), out, echo=lambda line: None)
    assert_nothing_left(out)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_network_fails_with_one_line_that_says_what_to_do(tmp_path, capsys):
    out = tmp_path / "chest_xray"
    code = main(["download", "--source", f"http://127.0.0.1:{closed_port()}/archive.zip", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: cannot reach 127.0.0.1"), captured.err
    assert download.KAGGLE_PAGE in errors[0] and "CXR_DATA_DIR" in errors[0]
    assert "Traceback" not in captured.err
    assert_nothing_left(out)


# ---------------------------------------------------------------- the CLI and local zips


def test_cli_prints_the_cxr_data_dir_line_last_and_info_reads_it(server, tmp_path, capsys, monkeypatch):
    archive = kaggle_zip(macosx=True)
    server.files["/archive.zip"] = archive
    out = tmp_path / "my data" / "chest_xray"  # a space: the printed line must still work in a shell
    sha256 = hashlib.sha256(archive).hexdigest()
    assert main(["download", "--source", server.url("/archive.zip"), "--out", str(out), "--sha256", sha256]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"export CXR_DATA_DIR='{out / 'chest_xray'}'"
    monkeypatch.setenv("CXR_DATA_DIR", str(out / "chest_xray"))
    assert main(["info", "--json"]) == 0
    assert f'"images": {IMAGES_PER_ZIP}' in capsys.readouterr().out


def test_a_local_zip_is_laid_out_like_a_download(tmp_path):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(kaggle_zip(prefix="", macosx=True))
    out = tmp_path / "chest_xray"
    assert download.download(str(archive), out, echo=lambda line: None) == out
    assert len(data.scan_folder(out).manifest) == IMAGES_PER_ZIP


def test_a_local_zip_with_the_wrong_checksum_is_refused(tmp_path):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(kaggle_zip())
    out = tmp_path / "chest_xray"
    with pytest.raises(UserError, match="not the expected"):
        download.download(str(archive), out, sha256="0" * 64, echo=lambda line: None)
    assert_nothing_left(out)
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert download.download(str(archive), out, sha256=good, echo=lambda line: None) == out / "chest_xray"


def test_a_truncated_local_zip_is_refused(tmp_path):
    archive = tmp_path / "archive.zip"
    archive.write_bytes(kaggle_zip()[:-200])  # the central directory sits at the end
    out = tmp_path / "chest_xray"
    with pytest.raises(UserError, match="not a complete zip archive") as caught:
        download.download(str(archive), out, echo=lambda line: None)
    assert_one_line(caught.value)
    assert_nothing_left(out)


# ---------------------------------------------------------------- from Kaggle (kagglehub stood in for)


@pytest.fixture
def fake_kagglehub(monkeypatch, tmp_path):
    """kagglehub.dataset_download writing Kaggle's archive, as extracted, into output_dir."""
    kagglehub = pytest.importorskip("kagglehub")
    calls = []

    def dataset_download(handle, path=None, *, force_download=False, output_dir=None):
        calls.append((handle, output_dir))
        with zipfile.ZipFile(io.BytesIO(kaggle_zip(prefix="chest_xray/", macosx=True))) as archive:
            archive.extractall(output_dir)
        return output_dir

    monkeypatch.setattr(kagglehub, "dataset_download", dataset_download)
    return calls


def test_kaggle_source_calls_kagglehub_and_lays_out_its_result(fake_kagglehub, tmp_path):
    out = tmp_path / "chest_xray"
    root = download.download("kaggle", out, echo=lambda line: None)
    assert [handle for handle, _ in fake_kagglehub] == ["paultimothymooney/chest-xray-pneumonia"]
    assert fake_kagglehub[0][1] != str(out)  # kagglehub writes beside the target, not into it
    assert root == out / "chest_xray"
    assert len(data.scan_folder(out).manifest) == IMAGES_PER_ZIP
    assert leftovers(out) == []


def test_kaggle_read_only_copy_is_copied_into_place(monkeypatch, tmp_path):
    kagglehub = pytest.importorskip("kagglehub")
    mounted = tmp_path / "kaggle_input"  # what kagglehub answers inside a Kaggle notebook
    with zipfile.ZipFile(io.BytesIO(kaggle_zip(prefix="chest_xray/"))) as archive:
        archive.extractall(mounted)
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, **kwargs: str(mounted))
    out = tmp_path / "chest_xray"
    assert download.download("kaggle", out, echo=lambda line: None) == out / "chest_xray"
    assert len(data.scan_folder(out).manifest) == IMAGES_PER_ZIP


def test_a_kagglehub_failure_is_one_line_that_says_what_to_do(monkeypatch, tmp_path, capsys):
    kagglehub = pytest.importorskip("kagglehub")
    import requests

    def offline(handle, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'www.kaggle.com'\n(more detail on a second line)")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    out = tmp_path / "chest_xray"
    assert main(["download", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Kaggle download failed (ConnectionError"), err
    assert download.KAGGLE_PAGE in err[0] and "CXR_DATA_DIR" in err[0]
    assert_nothing_left(out)


def test_importing_the_command_does_not_load_kagglehub_or_pooch(project_root):
    # They cost import time; only running the download command may load them.
    code = "import sys, cxr_core.__main__, cxr_core.download; print(sorted({'kagglehub', 'pooch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=project_root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
