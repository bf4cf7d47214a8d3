"""The generated protobuf code is reproducible and matches protos/; a missing build says what to run."""

from __future__ import annotations

import filecmp
import subprocess
import sys

from tests.support.processes import REPO


def generate(out_root):
    """Run the build script in its own process: protoc inside a test process that already holds
    gRPC threads and protobuf descriptors has crashed it."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_protos.py"), "--out", str(out_root)],
                   check=True, capture_output=True, timeout=120)
    return out_root / "newsclf"


def _tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts and p.parent != folder}


def test_generated_code_is_up_to_date(tmp_path):
    fresh = generate(tmp_path / "a")
    again = generate(tmp_path / "b")
    assert _tree(fresh) == _tree(again), "generation is not reproducible"
    built = REPO / "newsclf"
    stale = {str(p) for p in set(_tree(fresh)) ^ set(_tree(built))}
    stale |= {str(p) for p in _tree(fresh) if not filecmp.cmp(fresh / p, built / p, shallow=False)}
    assert not stale, f"newsclf/ is out of date with protos/ ({sorted(stale)}): run scripts/build_protos.py"
    assert {p.relative_to(REPO / "protos") for p in (REPO / "protos").rglob("*.proto")} == {
        p.relative_to(tmp_path / "a").with_name(p.name.replace("_pb2.py", ".proto")) for p in fresh.rglob("*_pb2.py")}


def test_descriptor_names_are_the_proto_paths(tmp_path):
    """Reflection serves files under the names clients and tools expect: newsclf/v1/*.proto."""
    text = (generate(tmp_path) / "v1" / "classifier_pb2_grpc.py").read_text()
    assert "from newsclf.v1 import classifier_pb2" in text
    from service.protos import classifier_pb2, jobs_pb2
    assert classifier_pb2.DESCRIPTOR.name == "newsclf/v1/classifier.proto"
    assert jobs_pb2.DESCRIPTOR.name == "newsclf/v1/jobs.proto"


def test_missing_generated_code_names_the_script(tmp_path):
    """With the generated modules absent, importing the API modules fails with the command to run."""
    copy = tmp_path / "repo"
    for package, names in (("newsclf", ("__init__.py",)), ("service", ("__init__.py", "protos.py"))):
        (copy / package).mkdir(parents=True)
        for name in names:
            (copy / package / name).write_bytes((REPO / package / name).read_bytes())
    # -S: no site-packages, so an editable install of the real package cannot supply the modules
    result = subprocess.run([sys.executable, "-S", "-c", "import service.protos"], cwd=copy, capture_output=True,
                            text=True, timeout=60, env={"PYTHONPATH": str(copy), "PATH": ""})
    assert result.returncode != 0
    assert "run `python scripts/build_protos.py`" in result.stderr
