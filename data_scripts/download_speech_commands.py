#!/usr/bin/env python3
"""Download and extract Google Speech Commands (v0.01 or v0.02).

Usage examples::

    python data_scripts/download_speech_commands.py --version 0.02 --out data/speech_commands_v0.02
    python data_scripts/download_speech_commands.py --version 0.01 --out data/sc01 --test-set

What it does:

* downloads ``speech_commands_v0.0X.tar.gz`` from the official archive
  (``http://download.tensorflow.org/data``) into ``OUT/<archive>.part``,
  resuming an interrupted download with an HTTP ``Range`` request (and starting
  over if the server ignores ``Range``);
* checks the received size against ``Content-Length`` and, when one is known
  (``--sha256`` or the table below), the SHA-256 checksum; then atomically
  renames ``.part`` to the final archive name;
* extracts the archive safely (members with absolute paths, ``..`` components,
  links or device files are rejected) and verifies the layout (word folders,
  ``validation_list.txt``, ``testing_list.txt``, ``_background_noise_``);
* with ``--test-set`` also fetches the separately published official test set
  (``speech_commands_test_set_v0.0X.tar.gz``) into ``OUT/_test_set_`` (the
  leading underscore keeps it from looking like a keyword folder);
* deletes the archives after a successful extraction unless ``--keep-archive``.

Every expected failure (no network, DNS failure, refused connection, HTTP error,
disk full, corrupt archive, checksum mismatch) ends with a single
``error: ...`` line on stderr and a non-zero exit status, without a traceback.
A partial download is kept so that re-running the command resumes it.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

try:  # tqdm is a project dependency; degrade gracefully if it is missing.
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

DEFAULT_BASE_URL = "http://download.tensorflow.org/data"

ARCHIVES = {
    "0.01": {
        "train": "speech_commands_v0.01.tar.gz",
        "test": "speech_commands_test_set_v0.01.tar.gz",
        "num_words": 30,
    },
    "0.02": {
        "train": "speech_commands_v0.02.tar.gz",
        "test": "speech_commands_test_set_v0.02.tar.gz",
        "num_words": 35,
    },
}

# Known SHA-256 checksums of the official archives, keyed by archive file name.
# Deliberately empty: no checksum is listed here unless it has been verified
# against the real files. Until then integrity rests on the Content-Length
# check plus a full gzip/tar read during extraction; pass --sha256 to pin one.
KNOWN_SHA256: dict[str, str] = {}

TEST_SET_DIRNAME = "_test_set_"
COMPLETE_MARKER = ".download_complete"
CHUNK = 1 << 20  # 1 MiB
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class DownloadError(Exception):
    """An expected failure; main() prints it as one line and exits non-zero."""


def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


# --------------------------------------------------------------------------- errors


def describe_network_error(exc: BaseException, url: str) -> str:
    """Turn a urllib / socket exception into one human-readable sentence."""
    host = urllib.parse.urlsplit(url).netloc or url
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason} for {url}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host {host} (DNS failure or no network): {reason.strerror or reason}"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {host}"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"connection to {host} timed out"
    if isinstance(reason, ConnectionResetError):
        return f"connection to {host} was reset"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"network unreachable while connecting to {host} (no network?)"
    if isinstance(reason, (http.client.IncompleteRead, http.client.RemoteDisconnected)):
        return f"connection to {host} closed before the download finished"
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return f"network error while fetching {url}: {text}"


def disk_full_message(exc: OSError, where: Path) -> str | None:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"disk full while writing {where} (free some space and re-run to resume)"
    return None


# --------------------------------------------------------------------------- download


def sha256_of(path: Path, progress: bool) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    bar = make_bar(size, f"sha256 {path.name}", progress)
    with open(path, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            h.update(block)
            bar.update(len(block))
    bar.close()
    return h.hexdigest()


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def make_bar(total: int | None, desc: str, progress: bool, initial: int = 0):
    if not progress or tqdm is None:
        return _NullBar()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        dynamic_ncols=True,
        leave=False,
        disable=None,  # auto: no bar when stderr is not a terminal (logs, CI)
    )


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _open(url: str, timeout: float, start: int = 0, method: str = "GET"):
    headers = {"User-Agent": "kws-download-speech-commands/1.0", "Accept-Encoding": "identity"}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    req = urllib.request.Request(url, headers=headers, method=method)
    return urllib.request.urlopen(req, timeout=timeout)


def _remote_size(url: str, timeout: float) -> int | None:
    try:
        with _open(url, timeout, method="HEAD") as resp:
            cl = resp.headers.get("Content-Length")
            return int(cl) if cl is not None else None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    timeout: float,
    progress: bool,
) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part`` (resumable); return ``dest``."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)

    if dest.exists():
        log(f"{dest.name}: already downloaded ({human(dest.stat().st_size)}), skipping download")
        if sha256:
            verify_checksum(dest, sha256, progress, remove_on_mismatch=False)
        return dest

    start = part.stat().st_size if part.exists() else 0
    try:
        try:
            resp = _open(url, timeout, start)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start > 0:
                # Range not satisfiable: the .part is either already complete or bogus.
                total = _remote_size(url, timeout)
                if total is not None and total == start:
                    log(f"{dest.name}: partial file is already complete ({human(start)})")
                    return _finish(part, dest, total, sha256, progress)
                warn(f"server rejected resume from byte {start}; restarting {dest.name}")
                part.unlink()
                start = 0
                resp = _open(url, timeout, 0)
            else:
                raise

        with resp:
            status = getattr(resp, "status", 200)
            length = resp.headers.get("Content-Length")
            length = int(length) if length is not None and length.isdigit() else None
            if start > 0 and status == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != start:
                    raise DownloadError(
                        f"server sent an unexpected Content-Range {resp.headers.get('Content-Range')!r} "
                        f"when resuming {dest.name}; delete {part} and retry"
                    )
                total = int(m.group(3)) if m.group(3) != "*" else (start + length if length is not None else None)
                mode = "ab"
                log(f"{dest.name}: resuming at {human(start)} of {human(total) if total else '?'}")
            else:
                if start > 0:
                    warn(f"server ignored the Range request; restarting {dest.name} from scratch")
                start = 0
                total = length
                mode = "wb"
                log(f"downloading {url} ({human(total) if total else 'size unknown'})")

            bar = make_bar(total, dest.name, progress, initial=start)
            received = start
            try:
                with open(part, mode) as f:
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
                        received += len(block)
                        bar.update(len(block))
            finally:
                bar.close()
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(describe_network_error(exc, url)) from None
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError) as exc:
        msg = describe_network_error(exc, url)
        if part.exists() and part.stat().st_size > 0:
            msg += f" (partial download kept in {part}; re-run to resume)"
        raise DownloadError(msg) from None
    except OSError as exc:
        full = disk_full_message(exc, part)
        if full:
            raise DownloadError(full) from None
        if isinstance(exc, (ConnectionError, TimeoutError)) or exc.errno in (
            errno.ENETUNREACH,
            errno.EHOSTUNREACH,
        ):
            raise DownloadError(describe_network_error(exc, url)) from None
        raise

    if total is not None and received != total:
        raise DownloadError(
            f"{dest.name}: received {received} bytes but expected {total} (connection dropped?); "
            f"re-run to resume from {part}"
        )
    return _finish(part, dest, total, sha256, progress)


def verify_checksum(path: Path, expected: str, progress: bool, *, remove_on_mismatch: bool) -> None:
    actual = sha256_of(path, progress)
    if actual.lower() != expected.lower():
        if remove_on_mismatch:
            path.unlink(missing_ok=True)
        raise DownloadError(
            f"checksum mismatch for {path.name}: expected sha256 {expected.lower()}, got {actual}"
            + ("; the file was deleted, re-run to download it again" if remove_on_mismatch else "")
        )
    log(f"{path.name}: sha256 OK")


def _finish(part: Path, dest: Path, total: int | None, sha256: str | None, progress: bool) -> Path:
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{part.name}: size {size} does not match the expected {total} bytes")
    if sha256:
        verify_checksum(part, sha256, progress, remove_on_mismatch=True)
    os.replace(part, dest)  # atomic on the same filesystem
    log(f"saved {dest} ({human(size)})")
    return dest


# --------------------------------------------------------------------------- extraction


def check_member(member: tarfile.TarInfo) -> PurePosixPath:
    """Return the normalised relative path of ``member`` or raise DownloadError."""
    name = member.name
    if not name or "\x00" in name:
        raise DownloadError(f"unsafe archive member {name!r}: empty or invalid name")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(f"unsafe archive member {name!r}: absolute path")
    parts = [p for p in re.split(r"[/\\]+", name) if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise DownloadError(f"unsafe archive member {name!r}: contains '..'")
    if member.issym() or member.islnk():
        raise DownloadError(f"unsafe archive member {name!r}: links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"unsafe archive member {name!r}: not a regular file or directory")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


class _CountingReader:
    """File wrapper that reports bytes read to a progress bar."""

    def __init__(self, f, bar):
        self._f = f
        self._bar = bar

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._bar.update(len(data))
        return data

    def close(self) -> None:
        self._f.close()


def _corrupt(archive: Path, why: str) -> str:
    """Delete a corrupt archive (re-downloading is the only fix) and describe it."""
    try:
        archive.unlink()
        action = "it was deleted; re-run to download it again"
    except OSError:
        action = "delete it and re-run to download it again"
    return f"corrupt archive {archive.name} ({why}); {action}"


def safe_extract(archive: Path, out: Path, progress: bool) -> int:
    """Stream-extract ``archive`` into ``out``; every member is checked before it is written."""
    out.mkdir(parents=True, exist_ok=True)
    root = out.resolve()
    n_files = 0
    bar = make_bar(archive.stat().st_size, f"extract {archive.name}", progress)
    try:
        with open(archive, "rb") as raw:
            reader = _CountingReader(raw, bar)
            with tarfile.open(fileobj=reader, mode="r|gz") as tar:
                for member in tar:
                    rel = check_member(member)
                    target = (root / rel).resolve()
                    if target != root and root not in target.parents:
                        raise DownloadError(f"unsafe archive member {member.name!r}: escapes {out}")
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    if src is None:  # pragma: no cover - regular files always have data
                        continue
                    tmp = target.with_name(target.name + ".tmp-extract")
                    with src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                    os.replace(tmp, target)
                    n_files += 1
    except DownloadError:
        raise
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DownloadError(_corrupt(archive, f"{type(exc).__name__}: {exc}")) from None
    except OSError as exc:
        full = disk_full_message(exc, out)
        if full:
            raise DownloadError(full) from None
        if "gzip" in str(exc).lower() or "compressed" in str(exc).lower():
            raise DownloadError(_corrupt(archive, str(exc))) from None
        raise
    finally:
        bar.close()
    if n_files == 0:
        raise DownloadError(_corrupt(archive, "it contains no files"))
    return n_files


# --------------------------------------------------------------------------- layout


def _wav_count(d: Path) -> int:
    return sum(1 for p in d.iterdir() if p.suffix.lower() == ".wav" and p.is_file())


def verify_layout(out: Path, expected_words: int | None) -> dict:
    """Check the extracted training archive layout; return counts."""
    if not out.is_dir():
        raise DownloadError(f"{out} is not a directory")
    words = {}
    for d in sorted(out.iterdir()):
        if d.is_dir() and not d.name.startswith((".", "_")):
            n = _wav_count(d)
            if n:
                words[d.name] = n
    if not words:
        raise DownloadError(f"bad layout in {out}: no word folders with .wav files")
    lists = {}
    for name in ("validation_list.txt", "testing_list.txt"):
        p = out / name
        if not p.is_file():
            raise DownloadError(f"bad layout in {out}: {name} is missing")
        entries = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        missing = [e for e in entries if not (out / e).is_file()]
        if missing:
            raise DownloadError(
                f"bad layout in {out}: {len(missing)} of {len(entries)} files in {name} are missing "
                f"(first: {missing[0]})"
            )
        lists[name] = len(entries)
    noise = out / "_background_noise_"
    if not noise.is_dir():
        raise DownloadError(f"bad layout in {out}: _background_noise_ folder is missing")
    n_noise = _wav_count(noise)
    if n_noise == 0:
        raise DownloadError(f"bad layout in {out}: _background_noise_ contains no .wav files")
    if expected_words is not None and len(words) != expected_words:
        warn(f"found {len(words)} word folders, the official release has {expected_words}")
    total = sum(words.values())
    log(
        f"layout OK: {len(words)} words, {total} utterances, "
        f"{lists['validation_list.txt']} validation / {lists['testing_list.txt']} testing entries, "
        f"{n_noise} background-noise files"
    )
    return {
        "words": words,
        "num_words": len(words),
        "num_utterances": total,
        "validation": lists["validation_list.txt"],
        "testing": lists["testing_list.txt"],
        "background_noise": n_noise,
    }


def verify_test_layout(test_dir: Path) -> dict:
    """Check the official test-set archive (class folders incl. _silence_/_unknown_)."""
    classes = {}
    if test_dir.is_dir():
        for d in sorted(test_dir.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                n = _wav_count(d)
                if n:
                    classes[d.name] = n
    if not classes:
        raise DownloadError(f"bad layout in {test_dir}: no class folders with .wav files")
    log(f"test set OK: {len(classes)} classes, {sum(classes.values())} utterances in {test_dir}")
    return {"classes": classes, "num_utterances": sum(classes.values())}


# --------------------------------------------------------------------------- driver


def fetch_and_extract(
    url: str,
    archive: Path,
    extract_to: Path,
    *,
    sha256: str | None,
    timeout: float,
    progress: bool,
    keep_archive: bool,
    force: bool,
) -> bool:
    """Return False if skipped because ``extract_to`` already holds a completed extraction."""
    marker = extract_to / COMPLETE_MARKER
    if marker.is_file() and not force:
        log(f"{extract_to}: already extracted from {marker.read_text().strip()} (use --force to redo)")
        return False
    download(url, archive, sha256=sha256, timeout=timeout, progress=progress)
    log(f"extracting {archive.name} into {extract_to}")
    n = safe_extract(archive, extract_to, progress)
    log(f"extracted {n} files")
    marker.write_text(archive.name + "\n")
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Download and extract Google Speech Commands (v0.01 / v0.02).",
    )
    p.add_argument("--version", choices=sorted(ARCHIVES), default="0.02", help="dataset version (default 0.02)")
    p.add_argument("--out", required=True, type=Path, help="dataset root to extract into")
    p.add_argument(
        "--test-set",
        action="store_true",
        help=f"also fetch the official test-set archive into OUT/{TEST_SET_DIRNAME}",
    )
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"archive base URL (default {DEFAULT_BASE_URL})")
    p.add_argument("--keep-archive", action="store_true", help="keep the .tar.gz after extraction")
    p.add_argument("--sha256", help="expected SHA-256 of the training archive")
    p.add_argument("--test-sha256", help="expected SHA-256 of the test-set archive")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds (default 60)")
    p.add_argument("--force", action="store_true", help="extract again even if OUT is already complete")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    spec = ARCHIVES[args.version]
    out: Path = args.out
    base = args.base_url.rstrip("/")
    progress = not args.no_progress
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create output directory {out}: {exc.strerror or exc}") from None

    jobs = [(spec["train"], out, args.sha256)]
    if args.test_set:
        jobs.append((spec["test"], out / TEST_SET_DIRNAME, args.test_sha256))

    for name, extract_to, sha in jobs:
        sha = sha or KNOWN_SHA256.get(name)
        if sha and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
            raise DownloadError(f"--sha256 must be 64 hex digits, got {sha!r}")
        fetch_and_extract(
            f"{base}/{name}",
            out / name,
            extract_to,
            sha256=sha,
            timeout=args.timeout,
            progress=progress,
            keep_archive=args.keep_archive,
            force=args.force,
        )

    verify_layout(out, spec["num_words"])
    if args.test_set:
        verify_test_layout(out / TEST_SET_DIRNAME)
    log(f"done: Speech Commands v{args.version} is in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted (a partial download is kept; re-run to resume)", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        where = getattr(exc, "filename", None) or "disk"
        full = disk_full_message(exc, Path(str(where)))
        print(f"error: {full or f'{exc.strerror or exc} ({where})'}", file=sys.stderr, flush=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
