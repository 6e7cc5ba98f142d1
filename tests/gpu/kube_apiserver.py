"""A local HTTP server that answers like kube-apiserver from the recorded-format files next to this module.

It serves pod and job lists of one namespace and honours ``DELETE`` with ``preconditions.uid`` the way the
API server does: a uid that is not the object's current uid gets ``409 Conflict``. ``recreate(name, uid)``
simulates an object re-created under the same name after it was listed.

Example:
    >>> with KubeApiServer() as api:
    ...     backend = KubernetesBackend(namespace="ml-eu", host=api.url)
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse

RECORDED = Path(__file__).with_name("kube_apiserver_recorded")
NAMESPACE = "ml-eu"


class KubeApiServer:
    def __init__(self) -> None:
        self.pods = json.loads((RECORDED / "list_pods_gpu_pool.json").read_text())
        self.jobs = json.loads((RECORDED / "list_jobs_gpu_pool.json").read_text())
        self.conflict = json.loads((RECORDED / "status_409_uid_precondition.json").read_text())
        self.requests: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str, str]] = []
        self._uids = {("pods", i["metadata"]["name"]): i["metadata"]["uid"] for i in self.pods["items"]} | {
            ("jobs", i["metadata"]["name"]): i["metadata"]["uid"] for i in self.jobs["items"]
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                server.requests.append({"method": "GET", "path": url.path, "query": query})
                if url.path == f"/api/v1/namespaces/{NAMESPACE}/pods":
                    self._send(200, server.pods)
                elif url.path == f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs":
                    self._send(200, server.jobs)
                else:
                    self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

            def do_DELETE(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append({"method": "DELETE", "path": url.path, "body": body})
                parts = url.path.strip("/").split("/")
                kind, name = parts[-2], parts[-1]
                current = server._uids.get((kind, name))
                wanted = (body.get("preconditions") or {}).get("uid")
                if current is None:
                    self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})
                elif wanted is not None and wanted != current:
                    self._send(409, server.conflict)
                else:
                    server.deleted.append((kind, name, current))
                    del server._uids[(kind, name)]
                    listing = server.pods if kind == "pods" else server.jobs
                    item = next(i for i in listing["items"] if i["metadata"]["name"] == name)
                    gone = {
                        **item,
                        "metadata": {**item["metadata"], "deletionTimestamp": "2026-12-01T08:00:01Z"},
                    }
                    self._send(200, {"kind": "Pod" if kind == "pods" else "Job", **gone})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def recreate(self, kind: str, name: str, uid: str) -> None:
        """The object ``name`` was deleted and created again: it has a new uid now."""
        self._uids[(kind, name)] = uid

    def __enter__(self) -> KubeApiServer:
        self.thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
