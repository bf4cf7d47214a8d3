"""The gateway's compiled TF Serving messages are a faithful subset of the upstream ones.

``protos/newsclf/tfserving`` declares only what the gateway uses, in a package of its own; these
tests hold every declared field and enum value to tensorflow-serving-api's (installed with the
embedded extra), cross the wire both ways, and run the TF Serving backend in a process where
TensorFlow cannot be imported at all.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor

from scoring.backends import tfs_api
from tests.support.processes import REPO

tf = pytest.importorskip("tensorflow")
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_status_pb2, model_pb2, predict_pb2, prediction_log_pb2, status_pb2  # noqa: E402

UPSTREAM_MESSAGES = {
    "TensorProto": tensor_pb2.TensorProto,
    "TensorShapeProto": tensor_shape_pb2.TensorShapeProto,
    "ModelSpec": model_pb2.ModelSpec,
    "PredictRequest": predict_pb2.PredictRequest,
    "PredictResponse": predict_pb2.PredictResponse,
    "GetModelStatusRequest": get_model_status_pb2.GetModelStatusRequest,
    "GetModelStatusResponse": get_model_status_pb2.GetModelStatusResponse,
    "ModelVersionStatus": get_model_status_pb2.ModelVersionStatus,
    "StatusProto": status_pb2.StatusProto,
    "PredictLog": prediction_log_pb2.PredictLog,
    "PredictionLog": prediction_log_pb2.PredictionLog,
}
UPSTREAM_ENUMS = {
    "DataType": types_pb2.DataType.DESCRIPTOR,
    "ErrorCode": status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type,
}


def ours():
    for module in (tfs_api.tensor_pb2, tfs_api.serving_pb2):
        yield from module.DESCRIPTOR.message_types_by_name.values()


def _check_message(mine, theirs) -> None:
    assert mine.name == theirs.name
    for field in mine.fields:
        assert field.name in theirs.fields_by_name, f"{mine.name}.{field.name} is not upstream"
        other = theirs.fields_by_name[field.name]
        where = f"{mine.name}.{field.name}"
        assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), where
        if (field.containing_oneof is None) != (other.containing_oneof is None):
            pytest.fail(f"{where}: oneof membership differs")
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                _check_message(field.message_type, other.message_type)
            elif field.message_type.full_name.startswith("google.protobuf."):
                assert field.message_type.full_name == other.message_type.full_name, where
            else:
                assert field.message_type.name == other.message_type.name, where
        if field.type == FieldDescriptor.TYPE_ENUM:
            _check_enum(field.enum_type, other.enum_type)
    for nested in mine.nested_types:
        if not nested.GetOptions().map_entry:
            _check_message(nested, theirs.nested_types_by_name[nested.name])


def _check_enum(mine, theirs) -> None:
    upstream = {v.name: v.number for v in theirs.values}
    for value in mine.values:
        assert upstream.get(value.name) == value.number, f"{mine.name}.{value.name}"


def test_every_declared_field_matches_upstream():
    declared = {m.name: m for m in ours()}
    assert set(declared) == set(UPSTREAM_MESSAGES)
    for name, message in declared.items():
        _check_message(message, UPSTREAM_MESSAGES[name].DESCRIPTOR)
    for name, enum in UPSTREAM_ENUMS.items():
        _check_enum(tfs_api.tensor_pb2.DESCRIPTOR.enum_types_by_name.get(name)
                    or tfs_api.serving_pb2.DESCRIPTOR.enum_types_by_name[name], enum)


def test_requests_and_answers_cross_the_wire_both_ways():
    request = tfs_api.PredictRequest()
    request.model_spec.name = "gru"
    request.model_spec.version_label = "stable"
    request.model_spec.signature_name = "serving_default"
    request.inputs["text"].CopyFrom(tfs_api.string_tensor(["wheat exports", "ölpreis"]))
    upstream = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert upstream.model_spec.version_label == "stable"
    assert [t.decode() for t in tf.make_ndarray(upstream.inputs["text"])] == ["wheat exports", "ölpreis"]

    probabilities = np.random.default_rng(0).random((3, 46), dtype=np.float32)
    answer = predict_pb2.PredictResponse()
    answer.model_spec.version.value = 7
    answer.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(probabilities))
    mine = tfs_api.PredictResponse.FromString(answer.SerializeToString())
    assert mine.model_spec.version.value == 7
    np.testing.assert_array_equal(tfs_api.array_of(mine.outputs["probabilities"]), probabilities)


def test_tf_serving_backend_runs_where_tensorflow_cannot_be_imported(tmp_path, prediction_server,
                                                                   tiny_model_root):
    """Modules named tensorflow and tensorflow_serving that refuse to import shadow the real ones."""
    for name in ("tensorflow", "tensorflow_serving"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed')\n")
    script = (
        "import sys\n"
        "from scoring.backends import create_backend\n"
        "from scoring.settings import BackendSettings\n"
        "from service.gateway import Gateway\n"
        "from service.settings import GatewaySettings\n"
        f"settings = GatewaySettings(model_root={str(tiny_model_root)!r}, "
        f"tfserving_addresses=[{prediction_server.address!r}], host='127.0.0.1')\n"
        "backend = create_backend(settings)\n"
        "result = backend.classify(['wheat and grain exports rose'], 'rnn', timeout=30)\n"
        "assert result.probabilities.shape == (1, 46), result.probabilities.shape\n"
        "assert not any(m == 'tensorflow' or m.startswith(('tensorflow.', 'tensorflow_serving')) "
        "for m in sys.modules), sorted(m for m in sys.modules if m.startswith('tensorflow'))\n"
        "print('ok', result.model, result.version)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok rnn 1")
