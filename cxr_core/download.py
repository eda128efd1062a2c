"""Fetch the Kermany chest X-ray data set and lay it out where cxr_core reads it.

    python -m cxr_core download                               # from Kaggle, with kagglehub
    python -m cxr_core download --source https://host/chest_xray.zip [--sha256 HEX]
    python -m cxr_core download --source ~/Downloads/archive.zip   # a zip fetched in a browser
    python -m cxr_core download --out ~/data/chest_xray

The data set is "Chest X-Ray Images (Pneumonia)" (Kermany et al. 2018, CC BY 4.0),
on Kaggle as paultimothymooney/chest-xray-pneumonia. The command prints the
`export CXR_DATA_DIR=...` line to use as its last line.

Nothing that looks complete appears before the data is: the archive is fetched
and extracted into a hidden temp folder beside the target, checked with
data.scan_folder, and only then renamed into place. An archive member that
would land outside the target is refused before anything is extracted.
kagglehub and pooch are imported here, inside the functions, so that the
dashboard never pays for them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from . import data
from .config import UserError

KAGGLE_DATASET = "paultimothymooney/chest-xray-pneumonia"
KAGGLE_PAGE = f"https://www.kaggle.com/datasets/{KAGGLE_DATASET}"
# A short connect timeout: an offline machine must fail in seconds, not hang on a
# black-holed route. The read timeout is between bytes, so slow links still finish.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
# macOS metadata that Kaggle's archive carries; useless on any other system.
JUNK_NAMES = {data.MACOS_JUNK, ".DS_Store"}
MANUAL_STEPS = (f"download \"Chest X-Ray Images (Pneumonia)\" from {KAGGLE_PAGE} where there is a network, then run "
                "`python -m cxr_core download --source archive.zip` (or extract it and set CXR_DATA_DIR to the folder)")


def default_out_dir() -> Path:
    # Outside the project and its cache: over a gigabyte that costs a download to replace
    # should not vanish when someone clears .cache or cleans the checkout.
    return Path.home() / "data" / "chest_xray"


def export_line(root: Path) -> str:
    return f"export CXR_DATA_DIR={shlex.quote(str(root))}"


def existing_data(out_dir: Path) -> Path | None:
    """The data root if out_dir already holds a usable data set; UserError if it holds anything else."""
    if not out_dir.exists():
        return None
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        return None
    try:
        return data.scan_folder(out_dir).root
    except UserError:
        raise UserError(f"{out_dir} exists and is not a chest X-ray data set; choose another --out or empty it") from None


def human_size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n_bytes < 1000:
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} GB"


def _network_reason(error: Exception) -> str:
    """'[Errno 111] Connection refused' from requests' long nested message."""
    import requests

    if isinstance(error, requests.exceptions.ConnectTimeout):
        return f"no answer within {CONNECT_TIMEOUT_S} s"
    if isinstance(error, requests.exceptions.Timeout):
        return f"no data for {READ_TIMEOUT_S} s"
    cut = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", str(error))
    if cut:
        return f"the server closed the connection {cut.group(2)} bytes before the end"
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(error))
    return match.group(1).strip() if match else type(error).__name__


def remote_size(url: str) -> int | None:
    """Content-Length from a HEAD request (None when the server does not say).

    This is also the network check: no connection fails here within
    CONNECT_TIMEOUT_S, with what to do instead.
    """
    import requests

    host = urlparse(url).netloc or url
    try:
        response = requests.head(url, allow_redirects=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except requests.exceptions.RequestException as error:
        raise UserError(f"cannot reach {host} ({_network_reason(error)}); without a network, {MANUAL_STEPS}") from None
    if response.status_code in (404, 410):
        raise UserError(f"{url} answered HTTP {response.status_code} (not found); check the URL or {MANUAL_STEPS}")
    if response.status_code >= 400:
        return None  # some servers refuse HEAD but serve GET
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def check_free_space(folder: Path, archive_bytes: int) -> None:
    # The archive and its extracted copy sit side by side until the archive is deleted;
    # JPEGs do not compress, so the copy is about the archive's size.
    needed = 2 * archive_bytes
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"{folder} has {human_size(free)} free; the download needs about {human_size(needed)}. "
                        "Free some space or pass --out on another disk")


def fetch_url(url: str, work: Path, sha256: str | None = None, echo=print) -> Path:
    """Download url into work/ with pooch (checksum when given, atomic rename); return the file."""
    import pooch
    import requests

    size = remote_size(url)
    echo(f"downloading {human_size(size) if size else 'an archive of unknown size'} from {url}")
    if size:
        check_free_space(work, size)
    pooch.get_logger().setLevel("WARNING")  # its INFO lines name pooch.retrieve arguments a CLI user cannot pass
    downloader = pooch.HTTPDownloader(progressbar=_progress_bar_wanted(),
                                      timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    try:
        path = pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None, fname="archive.zip",
                              path=work, downloader=downloader)
    except requests.exceptions.RequestException as error:
        raise UserError(f"the download from {url} broke off ({_network_reason(error)}); nothing was kept. "
                        f"Run the command again, or {MANUAL_STEPS}") from None
    except ValueError as error:  # pooch's checksum mismatch
        hashes = re.search(r"expected (\S+) but got (\S+?)\.?\s", str(error) + " ")
        reason = f"sha256 {hashes.group(2)}, expected {hashes.group(1)}" if hashes else str(error).splitlines()[0]
        raise UserError(f"the file from {url} is not the expected one ({reason}); "
                        "check --sha256 and the URL; nothing was kept") from None
    got = os.path.getsize(path)
    if size and got != size:
        raise UserError(f"the download from {url} is incomplete ({got} of {size} bytes); nothing was kept. "
                        "Run the command again")
    if not sha256:
        echo(f"sha256 {pooch.file_hash(path)} (pass --sha256 with it to check a later download)")
    return Path(path)


def check_local_sha256(path: Path, sha256: str) -> None:
    import pooch

    actual = pooch.file_hash(str(path))
    if actual.lower() != sha256.lower():
        raise UserError(f"{path} has sha256 {actual}, not the expected {sha256}; download it again")


def _progress_bar_wanted() -> bool:
    if not sys.stderr.isatty():
        return False  # a log file full of carriage returns helps nobody
    try:
        import tqdm  # noqa: F401  pooch needs it for its bar; kagglehub brings it
    except ImportError:
        return False
    return True


def safe_members(archive: zipfile.ZipFile, archive_name: str, dest: Path) -> list[zipfile.ZipInfo]:
    """The members to extract, without macOS junk; UserError if any would land outside dest."""
    dest = dest.resolve()
    members = []
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        outside = (name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts
                   or not (dest / name).resolve().is_relative_to(dest))
        if outside:
            raise UserError(f"{archive_name} holds {info.filename!r}, which would be written outside the data folder; "
                            f"refusing to extract it. This is not the Kaggle archive as published: {MANUAL_STEPS}")
        if not JUNK_NAMES.intersection(parts):
            members.append(info)
    return members


def extract_zip(archive_path: Path, dest: Path, echo=print) -> None:
    """Extract every member under dest (nothing at all when one would escape it)."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = safe_members(archive, archive_path.name, dest)
            echo(f"extracting {len(members)} files")
            dest.mkdir(parents=True, exist_ok=True)
            for info in members:
                archive.extract(info, dest)
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise UserError(f"{archive_path} is not a complete zip archive ({error}); "
                        f"download it again, or {MANUAL_STEPS}") from None


def fetch_kaggle(dest: Path, echo=print) -> None:
    """Download and extract the Kaggle data set into dest with kagglehub."""
    try:
        import kagglehub
    except ImportError:
        raise UserError("the kaggle source needs kagglehub: pip install -r requirements.txt") from None
    # kagglehub does not tell the size before it starts; its own progress bar shows it.
    echo(f"downloading {KAGGLE_DATASET} from Kaggle with kagglehub")
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_DATASET, output_dir=str(dest)))
    except Exception as error:  # kagglehub raises requests, credential and its own errors alike
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"Kaggle download failed ({type(error).__name__}: {reason[:200]}); check the network, "
                        "or log in (kagglehub.login() or KAGGLE_USERNAME/KAGGLE_KEY), or "
                        f"{MANUAL_STEPS}") from None
    if path.resolve() != dest.resolve():
        # Inside a Kaggle notebook kagglehub answers with its read-only mounted copy.
        shutil.copytree(path, dest, dirs_exist_ok=True)


def _work_folder(out_dir: Path) -> Path:
    """A fresh hidden folder beside out_dir: same file system, so the final rename is atomic."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))


def _validated_root(extracted: Path, source: str) -> Path:
    try:
        return data.scan_folder(extracted).root
    except UserError as error:
        raise UserError(f"what {source} holds is not the chest X-ray data set in Kaggle layout ({error}); "
                        f"check the source, or {MANUAL_STEPS}") from None


def download(source: str = "kaggle", out_dir=None, sha256: str | None = None, echo=print) -> Path:
    """Fetch the data set from `source` (kaggle, an http(s) URL or a local zip) into out_dir.

    Returns the data root to use as CXR_DATA_DIR (the folder that holds train/).
    An out_dir that already holds the data set is kept, and nothing is fetched.
    """
    out_dir = Path(out_dir).expanduser().absolute() if out_dir else default_out_dir()
    if sha256 and source == "kaggle":
        raise UserError("--sha256 checks a URL or zip file; kagglehub checks Kaggle's download itself")
    present = existing_data(out_dir)
    if present is not None:
        echo(f"{out_dir} already holds the data set; remove it to download again")
        return present
    leftovers = sorted(out_dir.parent.glob(f".{out_dir.name}.tmp-*")) if out_dir.parent.is_dir() else []
    if leftovers:
        echo(f"note: {len(leftovers)} leftover folder(s) of an interrupted download, e.g. {leftovers[0]}; "
             "remove them to free the space")
    work = _work_folder(out_dir)
    try:
        extracted = work / "data"
        if source == "kaggle":
            fetch_kaggle(extracted, echo)
        elif urlparse(source).scheme in ("http", "https"):
            extract_zip(fetch_url(source, work, sha256, echo), extracted, echo)
        elif Path(source).expanduser().is_file():
            if sha256:
                check_local_sha256(Path(source).expanduser(), sha256)
            extract_zip(Path(source).expanduser(), extracted, echo)
        else:
            raise UserError(f"--source {source}: expected kaggle, an http(s) URL or a zip file that exists")
        root = _validated_root(extracted, source)
        try:
            os.rename(extracted, out_dir)  # succeeds onto a missing or empty folder only
        except OSError as error:
            raise UserError(f"cannot move the data set into {out_dir} ({error.strerror}); "
                            "choose another --out or empty it") from None
        return out_dir / root.relative_to(extracted)
    finally:
        shutil.rmtree(work, ignore_errors=True)
