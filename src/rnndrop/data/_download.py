"""Where data live, checksums, and downloads that fail with one clear line.

The data root is the ``root`` argument, else ``$RNNDROP_DATA``, else ``~/.cache/rnndrop``. Known
files are verified by SHA-256; a file that is absent is downloaded from its canonical source (with
pooch, imported only then), and where that fails (no network) the error says which file to put
where.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional


class DataError(RuntimeError):
    """A data file is missing, corrupted or malformed; the message names it."""


#: SHA-256 of the canonical files, relative to the data root (as in ../shared/data/SHA256SUMS).
KNOWN_SHA256 = {
    "ptb/ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb/ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb/ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "fashion-mnist/train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "fashion-mnist/train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "fashion-mnist/t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    "imdb/aclImdb_v1.tar.gz": "ca72134af8ca4472d358b550d2ac4a3c9462642f2875d08964742b5bde699406",
}

#: Canonical sources: (URL, member inside an archive or None).
SOURCES = {
    "ptb": ("http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
            "./simple-examples/data/{name}"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}", None),
    "imdb": ("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", None),
    "scaledata": ("https://www.cs.cornell.edu/people/pabo/movie-review-data/scale_data.tar.gz", None),
}


def data_root(root: Optional[os.PathLike | str] = None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("RNNDROP_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/rnndrop").expanduser()


def sha256(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, relpath: str) -> Path:
    """Check ``path`` against the known checksum of ``relpath`` (if it has one)."""
    expected = KNOWN_SHA256.get(relpath)
    if expected is not None:
        actual = sha256(path)
        if actual != expected:
            raise DataError(f"{path}: checksum mismatch (expected sha256 {expected}, got {actual});"
                            f" the file is corrupted or not the canonical one — delete it to "
                            f"download again")
    return path


def _download(url: str, dest_dir: Path, fname: str):
    import pooch  # only needed when something must be fetched
    processor = None
    if url.endswith((".tgz", ".tar.gz")):
        processor = pooch.Untar(extract_dir=str(dest_dir))
    return pooch.retrieve(url, known_hash=None, fname=fname, path=str(dest_dir),
                          processor=processor, progressbar=False)


def ensure_file(root: Path, relpath: str, dataset: str, what: str) -> Path:
    """Return ``root/relpath`` verified; download the data set if it is absent."""
    path = root / relpath
    if path.is_file():
        return verify(path, relpath)
    url = SOURCES[dataset][0].format(name=Path(relpath).name)
    dest = path.parent if dataset != "ptb" else root / "_downloads"
    fresh = [d for d in (dest, *dest.parents) if not d.exists()]  # folders a failure must not leave
    try:
        _download(url, dest, Path(url).name)
        if dataset == "ptb":  # the archive holds ./simple-examples/data/ptb.*.txt
            src = dest / "simple-examples" / "data" / Path(relpath).name
            path.parent.mkdir(parents=True, exist_ok=True)
            src.replace(path)
    except Exception as e:  # offline, DNS failure, HTTP error, missing pooch ...
        for d in fresh:  # innermost first: remove what the attempt created, if still empty
            try:
                d.rmdir()
            except OSError:
                break
        raise DataError(f"{what} file {path.name} not found in {path.parent} and the download from "
                        f"{url} failed ({type(e).__name__}); put the file there or set "
                        f"RNNDROP_DATA to a directory that has {relpath}") from None
    if not path.is_file():
        raise DataError(f"download of {url} did not produce {path}")
    return verify(path, relpath)
