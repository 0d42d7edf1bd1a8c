"""The package itself: its generated code is what generate_protos.py makes from today's .proto,
it imports from a clean checkout without torch, and pip installs it into a venv."""

import filecmp
import os
import pathlib
import subprocess
import sys
import venv


from conftest import PACKAGE_ROOT

sys.path.insert(0, str(PACKAGE_ROOT))
import generate_protos  # noqa: E402


def test_generated_code_is_fresh(tmp_path):
    generate_protos.generate(tmp_path)
    stale = [name for name in generate_protos.OUTPUTS
             if not filecmp.cmp(tmp_path / name, PACKAGE_ROOT / name, shallow=False)]
    assert not stale, (f"{stale} differ from what the .proto files generate: run "
                       "python3 client/python/generate_protos.py and commit the result")


def test_import_needs_no_torch_and_no_build():
    code = "import sys, attnserve; assert 'torch' not in sys.modules; print(attnserve.__version__)"
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.1.0"


def test_pip_install_into_a_venv(tmp_path):
    """pip install --no-build-isolation ./client/python into a venv that sees the system's
    packages (grpcio, protobuf, numpy, torch from Debian); offline."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    source = tmp_path / "source"
    # A copy, so that the build leaves nothing behind in the checkout.
    subprocess.run(["cp", "-r", str(PACKAGE_ROOT), str(source)], check=True)
    for leftover in ("build", "attnserve.egg-info"):
        subprocess.run(["rm", "-rf", str(source / leftover)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--disable-pip-version-check", "--quiet", str(source)],
        capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    check = subprocess.run(
        [str(python), "-c", "import attnserve, attnserve.npu, attnserve.functional; "
                            "print(attnserve.__file__)"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert check.returncode == 0, check.stderr
    assert str(env_dir) in check.stdout
    installed = pathlib.Path(check.stdout.strip()).parent
    assert (installed / "_rpc_protos.binpb").exists()
    assert (installed / "v1" / "attention_pb2.py").exists()
