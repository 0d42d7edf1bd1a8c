"""Fixtures: real attnserve server processes on loopback ports, and clients connected to them.

The server binary is $ATTNSERVE_BINARY (ctest sets it to the build's binary), else
build/server/attnserve of this checkout. Tests that need it fail (never skip) when it is
missing.
"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

import pytest

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
REPO = PACKAGE_ROOT.parent.parent
if str(PACKAGE_ROOT) not in sys.path:
    sys.path.insert(0, str(PACKAGE_ROOT))

import attnserve  # noqa: E402

_LISTENING = re.compile(r"listening on \S+ \(port (\d+)")


def server_binary() -> str:
    path = os.environ.get("ATTNSERVE_BINARY") or str(REPO / "build" / "server" / "attnserve")
    if not os.access(path, os.X_OK):
        pytest.fail(f"attnserve server binary not found at {path}: build it (scripts/build.sh) "
                    "or set ATTNSERVE_BINARY")
    return path


class ServerProcess:
    """The real attnserve binary as a child process on 127.0.0.1.

    Started on port 0 (the server reports the port it bound) unless a port is given, e.g. to
    restart a server where its clients expect it.
    """

    def __init__(self, args=(), port: int = 0, probe: Optional[dict] = None):
        """`probe`: connect() arguments for the readiness check (TLS servers)."""
        self.args = list(args)
        self.probe = probe or {}
        self.log_file = tempfile.NamedTemporaryFile(prefix="attnserve-", suffix=".log",
                                                    delete=False)
        self.log_path = self.log_file.name
        self.process = subprocess.Popen(
            [server_binary(), f"--listen=127.0.0.1:{port}", *self.args],
            stdout=self.log_file, stderr=subprocess.STDOUT)
        self.port = self._wait_for_port(60.0)
        self.target = f"127.0.0.1:{self.port}"
        self._wait_serving(60.0)

    def log(self) -> str:
        return pathlib.Path(self.log_path).read_text(errors="replace")

    def _wait_for_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(f"attnserve exited with {self.process.returncode}:\n"
                                   f"{self.log()}")
            time.sleep(0.02)
        self.process.kill()
        raise RuntimeError(f"attnserve did not report its port:\n{self.log()}")

    def _wait_serving(self, timeout: float) -> None:
        client = attnserve.connect(self.target, timeout=2, **self.probe)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.health() == "SERVING":
                        return
                except attnserve.AttnServeError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"attnserve not SERVING:\n{self.log()}")
                time.sleep(0.05)
        finally:
            client.close()

    def count_log(self, text: str) -> int:
        return self.log().count(text)

    def signal(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self, grace: float = 30.0) -> int:
        """SIGTERM (the server drains), then SIGKILL after `grace`; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def close(self) -> None:
        self.stop()
        self.log_file.close()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


@pytest.fixture(scope="session")
def server():
    process = ServerProcess()
    yield process
    process.close()


@pytest.fixture(scope="session")
def client(server):
    c = attnserve.connect(server.target, timeout=300)
    attnserve.set_default_client(c)
    yield c
    attnserve.set_default_client(None)
    c.close()


def resident_support(client) -> str:
    """"" when the server keeps tensors (PutTensor works and a forward with retention.keep
    returns handles), else the reason it does not."""
    import numpy as np

    try:
        resident = client.put_tensor(np.zeros((2, 2), np.float32))
    except attnserve.UnimplementedError:
        return "the server does not implement PutTensor (resident tensors) yet"
    except attnserve.AttnServeError as e:
        return f"PutTensor failed: {e}"
    client.delete_tensor(resident)
    x = np.ones((1, 1, 2, 2), np.float32)
    result = client.flash_attention_score(x, x, x, head_num=1, input_layout="BNSD",
                                          retention=attnserve.TensorRetention(keep=True))
    missing = {"query", "key", "value", "attention_out", "softmax_max",
               "softmax_sum"} - set(result.handles)
    if missing:
        return f"a forward with retention.keep returned no handles for {sorted(missing)}"
    client.delete_tensors_async(result.handles.values(), result.server)
    return ""


def require_resident(client) -> None:
    reason = resident_support(client)
    if reason:
        print(f"SKIPPED (resident tensors): {reason}")
        pytest.skip(f"resident tensors unavailable: {reason}")


def make_pki(directory) -> dict:
    """A CA, a server certificate for 127.0.0.1 and the name attn.test, and a client
    certificate, made with openssl (PEM files in `directory`)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: str(directory / name) for name in (
        "ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")}

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", files["ca.key"], "-out", files["ca.pem"], "-days",
            "2", "-subj", "/CN=attnserve test CA", "-addext",
            "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    for who, extensions, serial in (
            ("server", "subjectAltName=IP:127.0.0.1,DNS:attn.test\n"
                       "extendedKeyUsage=serverAuth\n", 2),
            ("client", "extendedKeyUsage=clientAuth\n", 3)):
        ext = directory / f"{who}.ext"
        ext.write_text(extensions)
        csr = str(directory / f"{who}.csr")
        openssl("req", *ec, "-keyout", files[f"{who}.key"], "-out", csr, "-subj",
                f"/CN={who}")
        openssl("x509", "-req", "-in", csr, "-CA", files["ca.pem"], "-CAkey", files["ca.key"],
                "-set_serial", str(serial), "-days", "2", "-extfile", str(ext), "-out",
                files[f"{who}.pem"])
    return files
