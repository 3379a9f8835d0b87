#!/usr/bin/env python3
"""A local stand-in for the Hugging Face hub's HTTP API, for the `clip pull` tests.

Serves each REPO=FOLDER given as a repository at one commit:
  GET  /api/models/{repo}/revision/{rev}      -> {"sha", "siblings": [{"rfilename"}]}
  HEAD/GET /{repo}/resolve/{rev}/{file}       -> .safetensors (LFS): 302 to /cdn/<sha256> with
                                                 X-Linked-Etag (sha256) and X-Linked-Size;
                                                 other files: 200 with ETag = git blob SHA-1
  GET  /cdn/<sha256>                          -> the bytes, with Range (206)
Faults for the tests: --cut-after N (the first CDN answer closes the connection after N bytes),
--corrupt NAME (that file's bytes are altered, its advertised checksum is not).
Prints the port on the first line of stdout; logs each request (and its Range) to --log.
"""
import argparse
import hashlib
import http.server
import json
import os
import re
import sys
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("repos", nargs="+", help="ORG/NAME=FOLDER")
    ap.add_argument("--cut-after", type=int, default=-1)
    ap.add_argument("--corrupt", default="")
    ap.add_argument("--log", default="")
    args = ap.parse_args()

    repos = {}
    blobs = {}
    for spec in args.repos:
        repo, folder = spec.split("=", 1)
        files = {}
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            data = open(path, "rb").read()
            sha256 = hashlib.sha256(data).hexdigest()
            git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            served = data
            if name == args.corrupt:
                served = bytes([data[0] ^ 0xFF]) + data[1:]
            files[name] = dict(data=served, size=len(data), sha256=sha256, git=git)
            blobs[sha256] = served
        repos[repo] = files
    state = {"cut": args.cut_after}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            if args.log:
                with lock, open(args.log, "a") as f:
                    f.write("%s %s range=%s\n" % (self.command, self.path, self.headers.get("Range", "")))

        def send(self, code, body=b"", headers=None, head=False):
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def resolve(self, head):
            m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path)
            if not m or m.group(1) not in repos or m.group(3) not in repos[m.group(1)]:
                return self.send(404, b'{"error":"Entry not found"}', {"Content-Type": "application/json"}, head)
            f = repos[m.group(1)][m.group(3)]
            if f["data"] is not None and m.group(3).endswith(".safetensors"):
                return self.send(302, b"", {"Location": "/cdn/" + f["sha256"], "X-Linked-Etag": '"%s"' % f["sha256"],
                                            "X-Linked-Size": str(f["size"]), "X-Repo-Commit": COMMIT}, head)
            return self.send(200, f["data"], {"ETag": '"%s"' % f["git"], "X-Repo-Commit": COMMIT}, head)

        def do_HEAD(self):
            if "/resolve/" in self.path:
                return self.resolve(True)
            self.send(404, b"", None, True)

        def do_GET(self):
            m = re.match(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$", self.path)
            if m:
                if m.group(1) not in repos:
                    return self.send(404, b'{"error":"Repository not found"}', {"Content-Type": "application/json"})
                body = json.dumps({"id": m.group(1), "sha": COMMIT,
                                   "siblings": [{"rfilename": n} for n in repos[m.group(1)]] +
                                               [{"rfilename": "pytorch_model.bin"}, {"rfilename": "onnx/model.onnx"}]})
                return self.send(200, body.encode(), {"Content-Type": "application/json"})
            if "/resolve/" in self.path:
                return self.resolve(False)
            m = re.match(r"^/cdn/([0-9a-f]{64})$", self.path)
            if m and m.group(1) in blobs:
                data = blobs[m.group(1)]
                start = 0
                r = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
                if r:
                    start = int(r.group(1))
                    if start >= len(data):
                        return self.send(416, b"", {"Content-Range": "bytes */%d" % len(data)})
                part = data[start:]
                self.send_response(206 if r else 200)
                if r:
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                with lock:
                    cut = state["cut"]
                    state["cut"] = -1
                if cut >= 0:  # the connection breaks mid-file, once
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(part)
                return
            self.send(404, b"not found")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
