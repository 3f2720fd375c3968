"""Where registered data sets live, where they are published, and fetching them with checksums
(an interrupted download never leaves a partial file under the real name)."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

# ------------------------------------------------------------------------------------------
# Where the registered data sets live

def cache_dir(name: str) -> Path:
    """The default folder of a registered data set: ``$VAEKIT_DATA_DIR/<name>`` when that variable
    is set, else ``~/.cache/vaekit/<name>`` (one sub-folder per data set because MNIST and
    Fashion-MNIST use the same file names)."""
    root = os.environ.get("VAEKIT_DATA_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vaekit"
    return base / name


def dataset_dir(name: str, data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else cache_dir(name)


@dataclass(frozen=True)
class IdxSource:
    """Where a data set in MNIST's IDX layout is published, and the md5 of each .gz file."""

    mirrors: tuple[str, ...]  # base URLs, tried in turn
    md5: dict[str, str]  # file name (.gz) -> published md5
    class_names: tuple[str, ...]


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

IDX_SOURCES = {
    "mnist": IdxSource(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        class_names=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": IdxSource(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
    ),
}


def check_md5(data: bytes, path: Path, expected: str) -> None:
    # hashing is ~40 ms per 10 MB, small next to gunzip, so the result is not cached
    actual = hashlib.md5(data).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: md5 {actual} but the published md5 is {expected} (corrupt or not "
                        "the official file; delete it so vaekit downloads it again)")


def _open_url(url: str):
    """Opens a URL for reading (a seam for tests, which serve files without the network)."""
    return urllib.request.urlopen(url, timeout=60)


def _download(file_name: str, directory: Path, mirrors: tuple[str, ...], md5: str) -> str | None:
    """Fetches ``file_name`` from the first mirror that serves it with the right md5, into a
    temporary file in ``directory`` renamed into place at the end (so an interrupted download
    never leaves a partial file under the real name). Returns None, or why every mirror failed."""
    failures = []
    for base in mirrors:
        url = base + file_name
        temp = None
        try:
            with _open_url(url) as response, tempfile.NamedTemporaryFile(
                    dir=directory, prefix=f".{file_name}.", suffix=".part", delete=False) as temp:
                digest = hashlib.md5()
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    temp.write(chunk)
            if digest.hexdigest() != md5:
                failures.append(f"{url}: md5 {digest.hexdigest()}, expected {md5}")
                continue
            os.replace(temp.name, directory / file_name)
            temp = None
            return None
        except (OSError, ValueError, http.client.HTTPException) as error:
            failures.append(f"{url}: {error}")
        finally:
            if temp is not None and os.path.exists(temp.name):
                os.unlink(temp.name)
    return "; ".join(failures)


def find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def fetch_missing(name: str, directory: Path, missing: list[str], download: bool) -> None:
    source = IDX_SOURCES[name]
    names = ", ".join(f"{stem}.gz" for stem in missing)
    if not download:
        raise DataError(f"{name}: {names} not found in {directory}; pass --data-dir to the folder "
                        "holding them, or allow downloading")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{name}: {names} not found and {directory} cannot be created "
                        f"({error.strerror or error}); pass --data-dir to a writable folder or "
                        "to one holding the files") from error
    failures = []
    for stem in missing:
        file_name = f"{stem}.gz"
        failure = _download(file_name, directory, source.mirrors, source.md5[file_name])
        if failure:
            failures.append(failure)
    if failures:
        raise DataError(f"{name}: {names} missing from {directory} and the download failed "
                        f"({'; '.join(failures)}); download them by hand and pass --data-dir "
                        "to their folder")
