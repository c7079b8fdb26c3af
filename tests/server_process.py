"""`gguflm serve` in a subprocess on 127.0.0.1 (a free port), ready once /health answers; raw HTTP helpers."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ENV = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")
START_TIMEOUT = 180.0  # seconds for the subprocess to load torch and the model on a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A running server; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, model: Path, *args: str, log: Path, api_key: str | None = None):
        self.port = free_port()
        self.api_key = api_key
        self.log = log
        cmd = [sys.executable, "-m", "gguflm.cli.main", "serve", "-m", str(model), "--port", str(self.port),
               "--device", "cpu", *args, *(("--api-key", api_key) if api_key else ())]
        self._log_file = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=ENV)
        self._wait_ready()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.05)  # polling for the state "listening", not waiting for it to happen
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {START_TIMEOUT} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()

    # ------------------------------------------------------------------ raw HTTP

    def request(self, method: str, path: str, body: bytes | dict | None = None, key: str | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        """(status, body bytes); a dict body is sent as JSON; `key` defaults to the server's API key."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            key = self.api_key if key is None else key
            if key:
                hdrs["Authorization"] = f"Bearer {key}"
            conn.request(method, path, body=data, headers=hdrs)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by name (with its labels, as name{label=value})."""
        status, body = self.request("GET", "/metrics")
        assert status == 200, body
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def wait_for(self, condition, what: str, timeout: float = 120.0) -> dict[str, float]:
        """Poll /metrics until `condition(metrics)` holds; returns those metrics."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if condition(m):
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; metrics: {m}")
            time.sleep(0.02)  # polling for a state
