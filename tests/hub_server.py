"""A local stand-in for the Hugging Face Hub, for tests that must not touch the internet.

It speaks the part of the Hub's HTTP API that ``huggingface_hub`` 2.4 uses to download
(``hf_hub_download``, ``snapshot_download``, ``get_hf_file_metadata``) and to upload
(``create_repo``, ``upload_folder``), as read from the client's source:

- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit`` and ``ETag`` (git
  blob SHA-1) for regular files; for LFS files a 302 to a separate "CDN" origin with
  ``X-Linked-Etag`` (the SHA-256) and ``X-Linked-Size``, as the real Hub does; 404 with
  ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``. ``Range``
  requests are honoured (the client resumes interrupted downloads with them).
- ``GET /api/models/{repo}[/revision/{rev}]`` -> ``{"id", "sha", "siblings"}``;
  ``GET /api/models/{repo}/tree/{rev}[/{path}]`` -> ``[{"type", "path", "size", "oid",
  "lfs"?}]`` (``recursive`` honoured).
- ``POST /api/repos/create`` (409 when it exists), ``POST /api/validate-yaml`` (front
  matter parsed with PyYAML), ``POST /api/models/{repo}/preupload/{rev}`` (every file
  ``regular``), ``POST /api/models/{repo}/commit/{rev}`` (NDJSON, base64 contents).

Repos live in memory with real commit hashes (SHA-1 of the tree, parent and message).
Tests can seed files directly (:meth:`FakeHub.commit`, ``lfs=True`` for LFS files),
inject faults (:attr:`FakeHub.corrupt`, :attr:`FakeHub.interrupt`), stop and restart the
server (:meth:`FakeHub.stop`, :meth:`FakeHub.start`), and read every request made
(:attr:`FakeHub.requests`; :attr:`FakeHub.unhandled` lists requests it did not know).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_LICENSES = {"apache-2.0", "mit", "bsd-3-clause", "cc-by-4.0", "cc-by-nc-4.0", "cc-by-sa-4.0", "other",
             "unknown", "bsd", "gpl-3.0", "cc0-1.0", "openrail"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


@dataclass
class StoredFile:
    data: bytes
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def oid(self) -> str:
        """The git object id: of the content, or of the LFS pointer for LFS files."""
        return git_blob_sha1(lfs_pointer(self.data) if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    private: bool = False

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if _COMMIT_RE.match(revision):
            return self.commits.get(revision)
        return None


class FakeHub:
    """In-memory Hub served on 127.0.0.1 (a free port) plus a separate "CDN" origin for LFS."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, lower-cased headers)
        self.unhandled: list[tuple[str, str]] = []
        self.corrupt: set[str] = set()  # paths in repos whose downloads get flipped bytes
        self.interrupt: set[str] = set()  # paths whose next download stops half way and kills the server
        self.require_token: str | None = None  # if set, writes need "Authorization: Bearer <token>"
        self.lock = threading.RLock()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0
        self.cdn_port = 0

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self.cdn_port}"

    def start(self) -> "FakeHub":
        """Starts (or restarts, on the same ports) the Hub and CDN servers."""
        self.stop()
        hub = self

        class Handler(_Handler):
            fake = hub

        for attr in ("port", "cdn_port"):
            server = ThreadingHTTPServer(("127.0.0.1", getattr(self, attr)), Handler)
            server.daemon_threads = True
            setattr(self, attr, server.server_address[1])
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stops both servers: connections are then refused, as with no network."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        self._threads.clear()

    def _stop_soon(self):
        threading.Thread(target=self.stop, daemon=True).start()

    # ---- repository operations (also used directly by tests) --------------------------
    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        with self.lock:
            repo = Repo(repo_id, private=private)
            self.repos[repo_id] = repo
            # The real Hub makes an initial commit holding .gitattributes.
            self.commit(repo_id, {".gitattributes": b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"},
                        "initial commit")
            return repo

    def commit(self, repo_id: str, files: dict[str, bytes | None], message: str = "update", *,
               lfs: bool = False, revision: str = "main") -> str:
        """Adds (bytes) or deletes (None) files on branch ``revision``; returns the commit hash."""
        with self.lock:
            repo = self.repos.get(repo_id) or self.create_repo(repo_id)
            parent = repo.branches.get(revision)
            tree = dict(repo.commits[parent].files) if parent else {}
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                else:
                    tree[path] = StoredFile(bytes(data), lfs=lfs)
            listing = "\n".join(f"{p} {f.oid}" for p, f in sorted(tree.items()))
            text = f"tree {listing}\nparent {parent}\n\n{message}\n{len(repo.commits)}"
            oid = hashlib.sha1(text.encode()).hexdigest()
            repo.commits[oid] = Commit(oid, parent, message, tree)
            repo.branches[revision] = oid
            return oid

    def file(self, repo_id: str, path: str, revision: str = "main") -> StoredFile:
        return self.repos[repo_id].resolve(revision).files[path]

    def count(self, method: str, fragment: str) -> int:
        """Number of requests with this method whose path contains ``fragment``."""
        return sum(1 for m, p, _ in self.requests if m == method and fragment in p)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: stop() really cuts clients off

    def log_message(self, *args):  # keep pytest output clean
        pass

    # ---- plumbing --------------------------------------------------------------------
    def _send(self, status, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", content_type)
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status, code: str | None, message: str, headers=None):
        headers = dict(headers or {})
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self._json(status, {"error": message}, headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self):
        fake = self.fake
        url = urlsplit(self.path)
        with fake.lock:
            fake.requests.append((self.command, url.path, {k.lower(): v for k, v in self.headers.items()}))
        on_cdn = self.server.server_address[1] == fake.cdn_port
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        try:
            if on_cdn and len(parts) == 4 and parts[0] == "cdn":
                return self._cdn(parts[1] + "/" + parts[2], parts[3])
            if not on_cdn and len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            if not on_cdn and parts[:1] == ["api"]:
                return self._api(parts[1:], query)
        except BrokenPipeError:
            return
        with fake.lock:
            fake.unhandled.append((self.command, self.path))
        self._error(404, None, f"stand-in Hub: no route for {self.command} {self.path}")

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _check_write_auth(self) -> bool:
        token = self.fake.require_token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self._error(401, None, "Invalid credentials in Authorization header")
            return False
        return True

    # ---- downloads -------------------------------------------------------------------
    def _lookup(self, repo_id: str, revision: str, path: str | None):
        fake = self.fake
        with fake.lock:
            repo = fake.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            commit = repo.resolve(revision)
            if commit is None:
                self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
                return None
            if path is None:
                return repo, commit, None
            stored = commit.files.get(path)
            if stored is None:
                self._error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"",
                            {"X-Repo-Commit": commit.oid})
                return None
            return repo, commit, stored

    def _resolve(self, repo_id: str, revision: str, path: str):
        found = self._lookup(repo_id, revision, path)
        if found is None:
            return
        _, commit, stored = found
        headers = {"X-Repo-Commit": commit.oid}
        if stored.lfs:
            headers.update({
                "Location": f"{self.fake.cdn}/cdn/{repo_id}/{stored.sha256}?commit={commit.oid}&path={path}",
                "X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(len(stored.data)),
                "ETag": f'"{stored.oid}"',
            })
            return self._send(302, b"", headers, content_type="text/plain")
        headers["ETag"] = f'"{stored.oid}"'
        self._serve(stored, f"{repo_id}/{path}", headers)

    def _cdn(self, repo_id: str, sha256: str):
        fake = self.fake
        query = parse_qs(urlsplit(self.path).query)
        path = query.get("path", [""])[0]
        with fake.lock:
            repo = fake.repos.get(repo_id)
            stored = next((f for c in (repo.commits.values() if repo else ()) for f in c.files.values()
                           if f.lfs and f.sha256 == sha256), None)
        if stored is None:
            return self._send(404, b"NoSuchKey", content_type="text/plain")
        self._serve(stored, f"{repo_id}/{path}", {"ETag": f'"{sha256}"'})

    def _serve(self, stored: StoredFile, key: str, headers: dict):
        """Sends a file (or the requested range), applying injected faults."""
        fake = self.fake
        data = stored.data
        if key in fake.corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, end = 0, len(data)
        status = 200
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match and self.command == "GET":
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(data)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(len(body))}
        if self.command == "GET" and key in fake.interrupt:
            # Send the headers and half the body, then drop the connection and go down.
            fake.interrupt.discard(key)
            self.send_response(status)
            for k, v in {**headers, "Content-Type": "application/octet-stream"}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            fake._stop_soon()
            return
        self._send(status, body, headers, content_type="application/octet-stream")

    # ---- API -------------------------------------------------------------------------
    def _api(self, parts: list[str], query: dict):
        method = self.command
        if method == "POST" and parts == ["repos", "create"]:
            return self._create_repo()
        if method == "POST" and parts == ["validate-yaml"]:
            return self._validate_yaml()
        if len(parts) >= 3 and parts[0] == "models":
            repo_id = f"{parts[1]}/{parts[2]}"
            rest = parts[3:]
            if method == "GET" and (not rest or rest[0] == "revision"):
                return self._model_info(repo_id, rest[1] if len(rest) > 1 else "main")
            if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]),
                                  query.get("recursive", ["false"])[0].lower() in ("true", "1"))
            if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
                return self._preupload(repo_id, rest[1])
            if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
                return self._commit(repo_id, rest[1])
        with self.fake.lock:
            self.fake.unhandled.append((method, self.path))
        self._error(404, None, f"stand-in Hub: no API route for {method} {self.path}")

    def _model_info(self, repo_id, revision):
        found = self._lookup(repo_id, revision, None)
        if found:
            repo, commit, _ = found
            self._json(200, {"id": repo_id, "modelId": repo_id, "sha": commit.oid, "private": repo.private,
                             "siblings": [{"rfilename": p} for p in sorted(commit.files)]})

    def _tree(self, repo_id, revision, prefix, recursive):
        found = self._lookup(repo_id, revision, None)
        if not found:
            return
        _, commit, _ = found
        prefix = prefix.strip("/")
        entries, folders = [], set()
        for path, stored in sorted(commit.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1:] if prefix else path
            dirs = rel.split("/")[:-1]
            for i in range(1, len(dirs) + 1):
                if recursive or i == 1:
                    folders.add("/".join(([prefix] if prefix else []) + dirs[:i]))
            if not recursive and dirs:
                continue
            entry = {"type": "file", "path": path, "size": len(stored.data), "oid": stored.oid}
            if stored.lfs:
                entry["lfs"] = {"oid": stored.sha256, "size": len(stored.data),
                                "pointerSize": len(lfs_pointer(stored.data))}
            entries.append(entry)
        entries += [{"type": "directory", "path": d, "size": 0, "oid": hashlib.sha1(d.encode()).hexdigest()}
                    for d in sorted(folders)]
        self._json(200, entries)

    def _create_repo(self):
        if not self._check_write_auth():
            return
        payload = json.loads(self._body() or b"{}")
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        url = f"{self.fake.endpoint}/{repo_id}"
        with self.fake.lock:
            if repo_id in self.fake.repos:
                return self._json(409, {"error": "You already created this model repo", "url": url})
            self.fake.create_repo(repo_id, private=payload.get("visibility") == "private")
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self):
        payload = json.loads(self._body() or b"{}")
        content = payload.get("content", "")
        errors, warnings = [], []
        if not content.startswith("---\n"):
            warnings.append({"message": "Empty or missing yaml metadata in repo card"})
        else:
            end = content.find("\n---", 4)
            try:
                meta = yaml.safe_load(content[4:end]) if end != -1 else None
                if end == -1 or not isinstance(meta, dict):
                    errors.append({"message": "YAML front matter must be a mapping closed by '---'"})
                else:
                    if meta.get("license") is not None and meta["license"] not in _LICENSES:
                        errors.append({"message": f"\"license\" must be one of {sorted(_LICENSES)}"})
                    for key in ("tags", "datasets", "metrics"):
                        if key in meta and not (isinstance(meta[key], list) or isinstance(meta[key], str)):
                            errors.append({"message": f"\"{key}\" must be a string or a list of strings"})
                    for model in meta.get("model-index", []) or []:
                        for result in model.get("results", []):
                            for metric in result.get("metrics", []):
                                if not isinstance(metric.get("value"), (int, float)):
                                    errors.append({"message": "model-index metric values must be numbers"})
            except yaml.YAMLError as e:
                errors.append({"message": f"Invalid YAML: {e}"})
        self._json(400 if errors else 200, {"errors": errors, "warnings": warnings})

    def _preupload(self, repo_id, revision):
        if not self._check_write_auth():
            return
        payload = json.loads(self._body() or b"{}")
        found = self._lookup(repo_id, revision, None)
        if not found:
            return
        _, commit, _ = found
        files = []
        for f in payload.get("files", []):
            existing = commit.files.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": existing.oid if existing and not existing.lfs else None})
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _commit(self, repo_id, revision):
        if not self._check_write_auth():
            return
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        found = self._lookup(repo_id, revision, None)
        if not found:
            return
        repo, head, _ = found
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        if header.get("parentCommit") and header["parentCommit"] != head.oid:
            return self._error(412, None, "A commit has happened since. Please refresh and try again.")
        files: dict[str, bytes | None] = {}
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return self._error(400, None, "stand-in Hub: only base64 file contents are supported")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files[value["path"]] = None
            elif key == "deletedFolder":
                files.update({p: None for p in head.files if p.startswith(value["path"].rstrip("/") + "/")})
            elif key != "header":
                return self._error(400, None, f"stand-in Hub: unsupported commit operation {key!r}")
        oid = self.fake.commit(repo.repo_id, files, header.get("summary", ""),
                               revision=revision if revision in repo.branches else "main")
        self._json(200, {"success": True, "commitOid": oid, "pullRequestUrl": None,
                         "commitUrl": f"{self.fake.endpoint}/{repo_id}/commit/{oid}"})
