"""A small fake Hugging Face Hub on 127.0.0.1 for push tests: no network, bounded lifetime.

It answers the requests huggingface_hub 2.x makes to create a repo, create a branch, validate a README's metadata,
pre-upload and commit files (every file is declared "regular", so contents arrive base64-encoded in the commit and
no LFS/Xet transfer is involved), and read repo info; it records what was uploaded per branch. `fail_status` makes
every request fail (with a body that echoes the Authorization header, to prove callers scrub it); `delay` slows every
request (to prove uploads do not stall training). The server shuts itself down after `lifetime` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

ROUTE = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+|[^/]+)(?:/(preupload|commit|branch|revision)/(.+))?$")


@dataclass
class FakeRepo:
    repo_type: str
    private: Optional[bool]
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {".gitattributes": b""}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})
    commits: list[dict[str, Any]] = field(default_factory=list)


class FakeHub:
    """`with FakeHub() as hub: HfApi(endpoint=hub.endpoint)...`; inspect `hub.repos`, `hub.requests`, `hub.auth`."""

    def __init__(self, fail_status: Optional[int] = None, delay: float = 0.0, lifetime: float = 120.0):
        self.fail_status, self.delay, self.lifetime = fail_status, delay, lifetime
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.auth: set[str] = set()  # Authorization headers seen (the token must arrive here, and only here)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.timeout = 0.2  # how often the serving loop checks its deadline and stop flag
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        deadline = time.monotonic() + self.lifetime
        while time.monotonic() < deadline and not getattr(self, "_stop", False):
            self.server.handle_request()  # returns after at most server.timeout seconds
        self.server.server_close()

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join(timeout=5)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        return dict(self.repos[(repo_type, repo_id)].branches[revision])

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, payload: Any, headers: Optional[dict[str, str]] = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _common(self, method: str) -> Optional[bytes]:
                body = self._body()
                auth = self.headers.get("Authorization")
                with hub.lock:
                    hub.requests.append((method, self.path))
                    if auth:
                        hub.auth.add(auth)
                if hub.delay:
                    time.sleep(hub.delay)
                if hub.fail_status is not None:
                    self._reply(hub.fail_status, {"error": f"the fake Hub is down (request had {auth})"})
                    return None
                return body

            def do_GET(self) -> None:
                if self._common("GET") is None:
                    return
                m = ROUTE.match(self.path.split("?")[0])
                repo = hub.repos.get((m.group(1)[:-1], m.group(2))) if m else None
                if repo is None:
                    return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                revision = m.group(4) if m.group(3) == "revision" else "main"
                self._reply(200, {"id": m.group(2), "sha": repo.heads.get(revision, "0" * 40), "private": repo.private,
                                  "siblings": [{"rfilename": f} for f in repo.branches.get(revision, {})]})

            def do_POST(self) -> None:
                body = self._common("POST")
                if body is None:
                    return
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    return self._create(json.loads(body))
                if path == "/api/validate-yaml":
                    return self._validate(json.loads(body))
                m = ROUTE.match(path)
                if not m or not m.group(3):
                    return self._reply(404, {"error": f"no route {path}"})
                repo = hub.repos.get((m.group(1)[:-1], m.group(2)))
                if repo is None:
                    return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                action, revision = m.group(3), m.group(4)
                if action == "branch":
                    return self._branch(repo, revision, json.loads(body or b"{}"))
                if revision not in repo.branches:
                    return self._reply(404, {"error": f"Invalid rev id: {revision}"},
                                       {"X-Error-Code": "RevisionNotFound"})
                if action == "preupload":
                    files = json.loads(body)["files"]
                    modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                             for f in files]
                    return self._reply(200, {"files": modes})
                return self._commit(repo, m.group(1), m.group(2), revision, body)

            def _create(self, payload: dict) -> None:
                repo_type = payload.get("type") or "model"
                org = payload.get("organization")
                repo_id = f"{org}/{payload['name']}" if org else payload["name"]
                prefix = "" if repo_type == "model" else f"{repo_type}s/"
                url = f"{hub.endpoint}/{prefix}{repo_id}"
                with hub.lock:
                    if (repo_type, repo_id) in hub.repos:
                        return self._reply(409, {"error": "You already created this repo", "url": url})
                    hub.repos[(repo_type, repo_id)] = FakeRepo(repo_type, payload.get("visibility") == "private"
                                                               if "visibility" in payload else None)
                self._reply(200, {"url": url, "name": repo_id})

            def _validate(self, payload: dict) -> None:
                """The metadata must parse, and a model card's must load into ModelCardData (model-index included)."""
                import yaml
                from huggingface_hub import DatasetCardData, ModelCardData

                content = payload.get("content", "")
                match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
                try:
                    meta = yaml.safe_load(match.group(1)) if match else {}
                    if not isinstance(meta, dict):
                        raise ValueError("metadata is not a mapping")
                    (DatasetCardData if payload.get("repoType") == "dataset" else ModelCardData)(**meta)
                except Exception as e:
                    return self._reply(400, {"errors": [{"message": str(e)}]})
                self._reply(200, {"warnings": []})

            def _branch(self, repo: FakeRepo, branch: str, payload: dict) -> None:
                with hub.lock:
                    if branch in repo.branches:
                        return self._reply(409, {"error": "Reference already exists"})
                    start = payload.get("startingPoint") or "main"
                    repo.branches[branch] = dict(repo.branches[start])
                    repo.heads[branch] = repo.heads[start]
                self._reply(200, {})

            def _commit(self, repo: FakeRepo, kind: str, repo_id: str, revision: str, body: bytes) -> None:
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                added = {}
                for item in lines[1:]:
                    if item["key"] != "file":
                        return self._reply(400, {"error": f"only regular files are accepted, got {item['key']}"})
                    added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                with hub.lock:
                    oid = hashlib.sha1(body + repo.heads[revision].encode()).hexdigest()
                    repo.branches[revision].update(added)
                    repo.heads[revision] = oid
                    repo.commits.append({"revision": revision, "summary": lines[0]["value"]["summary"],
                                         "files": sorted(added)})
                prefix = "" if kind == "models" else f"{kind}/"
                self._reply(200, {"commitUrl": f"{hub.endpoint}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None})

        return Handler
