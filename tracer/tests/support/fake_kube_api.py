"""A stand-in Kubernetes API server for the tracer's end-to-end tests (no real API server can
run on the test machines). It serves the list and watch endpoints the tracer uses from a
kubectl-style List given on stdin: typed lists (PodList, ...) with a resourceVersion, and
watches that stay open without events until the client goes away, as a quiet cluster's do;
and the CNI's objects read by name (ConfigMaps, Calico's Installation), 404 when absent.
It listens on 127.0.0.1 only and prints its port once ready."""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

ITEMS = json.load(sys.stdin)["items"]
ROUTES = {
    "/api/v1/pods": ("Pod", "PodList", "v1"),
    "/api/v1/services": ("Service", "ServiceList", "v1"),
    "/api/v1/nodes": ("Node", "NodeList", "v1"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "EndpointSliceList", "discovery.k8s.io/v1"),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        return self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": "the server could not find the requested resource",
                                    "reason": "NotFound", "code": 404})

    @staticmethod
    def named(path):
        """(kind, apiVersion, namespace, name) of a GET of one object by name, else None."""
        parts = path.strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "configmaps":
            return ("ConfigMap", "v1", parts[3], parts[5])
        if len(parts) == 5 and parts[:4] == ["apis", "operator.tigera.io", "v1", "installations"]:
            return ("Installation", "operator.tigera.io/v1", None, parts[4])
        return None

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/version":
            return self.send_json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
        named = self.named(url.path)
        if named is not None:
            kind, api_version, namespace, name = named
            for i in ITEMS:
                meta = i.get("metadata", {})
                if i.get("kind") == kind and meta.get("name") == name and \
                        meta.get("namespace") == namespace:
                    return self.send_json(200, dict(i, apiVersion=api_version))
            return self.not_found()
        route = ROUTES.get(url.path)
        if route is None:
            return self.not_found()
        kind, list_kind, api_version = route
        if query.get("watch") == ["true"]:
            # A quiet watch: headers and nothing else, until the client closes or it times out.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            deadline = time.time() + min(float(query.get("timeoutSeconds", ["290"])[0]), 290)
            try:
                while time.time() < deadline:
                    time.sleep(0.2)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            return
        items = [dict(i) for i in ITEMS if i.get("kind") == kind]
        for i in items:
            i.pop("kind", None)
            i.pop("apiVersion", None)
        self.send_json(200, {"kind": list_kind, "apiVersion": api_version,
                             "metadata": {"resourceVersion": "1000"}, "items": items})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
