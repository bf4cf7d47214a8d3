"""TF Serving warmup: the file the export writes sits where TF Serving reads it, parses as
``PredictionLog`` TFRecords, and every record replays successfully over real gRPC against the
PredictionService test server (tests/support/prediction_server.py) running the same models."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2, prediction_service_pb2_grpc

from tests.support.prediction_server import PredictionServer
from training.layout import EXTRA_DIR, INPUT_KEY, OUTPUT_KEY, SIGNATURE_NAME, WARMUP_FILE, ModelRoot

# Where TF Serving looks for warmup data in a version folder, and how many records it accepts.
TF_SERVING_WARMUP_PATH = "assets.extra/tf_serving_warmup_requests"
TF_SERVING_MAX_WARMUP_RECORDS = 1000


def warmup_records(path) -> list[prediction_log_pb2.PredictionLog]:
    """TFRecords read by TensorFlow's own reader (checksums verified), parsed as PredictionLog."""
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(str(path))]


def served_versions(root: ModelRoot) -> list[tuple[str, int]]:
    return [(model, version) for model in root.models() for version in root.versions(model)]


def test_layout_puts_warmup_where_tf_serving_reads_it():
    assert f"{EXTRA_DIR}/{WARMUP_FILE}" == TF_SERVING_WARMUP_PATH


def test_warmup_records_parse(tiny_model_root):
    root = ModelRoot(tiny_model_root)
    assert len(served_versions(root)) >= 3, "expected rnn, gru and ensemble"
    for model, version in served_versions(root):
        path = root.version_dir(model, version) / TF_SERVING_WARMUP_PATH
        records = warmup_records(path)
        assert 1 <= len(records) <= TF_SERVING_MAX_WARMUP_RECORDS, f"{path}: {len(records)} records"
        for log in records:
            assert log.WhichOneof("log_type") == "predict_log", f"{path}: TF Serving replays predict logs"
            request = log.predict_log.request
            assert request.model_spec.signature_name in ("", SIGNATURE_NAME)
            assert set(request.inputs) == {INPUT_KEY}
            tensor = request.inputs[INPUT_KEY]
            assert tensor.dtype == tf.string.as_datatype_enum
            texts = tf.make_ndarray(tensor)
            assert texts.ndim == 1 and len(texts) >= 1 and all(t.strip() for t in texts)


def test_truncated_warmup_file_is_rejected(tiny_model_root, tmp_path):
    """The reader above is a real check: a damaged file fails as TF Serving's load would."""
    model, version = served_versions(ModelRoot(tiny_model_root))[0]
    data = (ModelRoot(tiny_model_root).version_dir(model, version) / TF_SERVING_WARMUP_PATH).read_bytes()
    damaged = tmp_path / "warmup"
    damaged.write_bytes(data[:-3])
    with pytest.raises(tf.errors.DataLossError):
        warmup_records(damaged)


@pytest.mark.integration
def test_warmup_records_replay(tiny_model_root):
    root = ModelRoot(tiny_model_root)
    sent = 0
    with PredictionServer(tiny_model_root) as server, grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for model, version in served_versions(root):
            labels = root.read_labels(model, version)
            for log in warmup_records(root.version_dir(model, version) / TF_SERVING_WARMUP_PATH):
                request = log.predict_log.request
                # TF Serving replays a version's records against that version while loading it.
                request.model_spec.name = model
                request.model_spec.version.value = version
                response = stub.Predict(request, timeout=30)
                sent += 1
                assert response.model_spec.name == model and response.model_spec.version.value == version
                probabilities = tf.make_ndarray(response.outputs[OUTPUT_KEY])
                batch = len(request.inputs[INPUT_KEY].string_val)
                assert probabilities.shape == (batch, len(labels))
                np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        assert server.predict_calls == sent > 0
