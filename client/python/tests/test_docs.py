"""Every Python example of docs/python.md and README.md runs against real servers.

The examples name servers 127.0.0.1:50051 / 50052 / 50053 and a CA file /etc/attn/ca.pem; the
test substitutes three running servers and a CA made by openssl. Each block runs on its own in
a fresh interpreter. (The `pip install` block is what test_package.py runs; the pytest command
is this suite.)"""

import os
import re
import subprocess
import sys

import pytest

from conftest import PACKAGE_ROOT, REPO, ServerProcess, make_pki

_BLOCK = re.compile(r"```(python|sh)\n(.*?)```", re.S)


def _blocks(path):
    text = (REPO / path).read_text()
    return [(kind, code) for kind, code in _BLOCK.findall(text)]


DOCS = [(path, i, kind, code) for path in ("docs/python.md", "README.md")
        for i, (kind, code) in enumerate(_blocks(path))
        if kind == "python" or code.startswith("PYTHONPATH=")]
# README's Python example is there (its shell blocks belong to the C++ tests).
assert any(path == "README.md" and kind == "python" for path, _, kind, _ in DOCS)


@pytest.fixture(scope="module")
def servers():
    started = [ServerProcess() for _ in range(3)]
    yield started
    for s in started:
        s.close()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))["ca.pem"]


@pytest.mark.parametrize("path,index,kind,code", DOCS,
                         ids=[f"{p}:{i}" for p, i, _, _ in DOCS])
def test_example_runs(servers, ca, tmp_path, path, index, kind, code):
    for port, server in zip(("50051", "50052", "50053"), servers):
        code = code.replace(f"127.0.0.1:{port}", server.target)
    code = code.replace("/etc/attn/ca.pem", ca)
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), ATTNSERVE_TARGET=servers[0].target)
    if kind == "python":
        command, cwd = [sys.executable, "-c", code], tmp_path
    else:
        command, cwd = ["bash", "-e", "-c", code.replace("/usr/bin/python3", sys.executable)], REPO
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{path} block {index} failed:\n{code}\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip(), f"{path} block {index} printed nothing"
    if "torch.equal(out.detach(), whole)" in code:  # the splitting example
        assert run.stdout.startswith("True"), run.stdout
    if "e.violations" in code:  # the error example
        assert "('head_num'," in run.stdout, run.stdout


def test_the_benchmark_commands_run(servers, tmp_path):
    """The benchmark commands of the performance notes, on small shapes."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    codec = subprocess.run([sys.executable, str(PACKAGE_ROOT / "bench" / "codec.py"),
                            "--shape", "1,2,64,32", "--repeats", "2", "--tune_malloc"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert codec.returncode == 0, codec.stderr
    assert codec.stdout.count('"case"') == 4
    step = subprocess.run([sys.executable, str(PACKAGE_ROOT / "bench" / "attention_step.py"),
                           "--target", servers[0].target, "--s", "128", "--d", "64",
                           "--steps", "2", "--stubs_steps", "2", "--eager_steps", "1",
                           "--dtypes", "fp32,bf16"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert step.returncode == 0, step.stderr
    assert step.stdout.count('"kind": "summary"') == 2, step.stdout
