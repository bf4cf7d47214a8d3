"""TF Serving's API as the gateway speaks it: messages, method paths, and tensor conversions.

The messages are compiled from ``protos/newsclf/tfserving/`` (a wire-compatible subset of TF
Serving's own ``.proto`` files) by the project's proto build, so this module imports neither
TensorFlow nor tensorflow-serving-api: a gateway with the TF Serving backend runs without them.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from newsclf import load

serving_pb2 = load("newsclf.tfserving.serving_pb2")
tensor_pb2 = load("newsclf.tfserving.tensor_pb2")

PredictRequest = serving_pb2.PredictRequest
PredictResponse = serving_pb2.PredictResponse
GetModelStatusRequest = serving_pb2.GetModelStatusRequest
GetModelStatusResponse = serving_pb2.GetModelStatusResponse
ModelVersionStatus = serving_pb2.ModelVersionStatus
PredictionLog = serving_pb2.PredictionLog
TensorProto = tensor_pb2.TensorProto

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"


class PredictionStub:
    """Callables for the two TF Serving methods the backend uses, on one channel."""

    def __init__(self, channel: grpc.Channel):
        self.predict = channel.unary_unary(PREDICT, request_serializer=PredictRequest.SerializeToString,
                                           response_deserializer=PredictResponse.FromString)
        self.get_model_status = channel.unary_unary(
            GET_MODEL_STATUS, request_serializer=GetModelStatusRequest.SerializeToString,
            response_deserializer=GetModelStatusResponse.FromString)


def _shape(dims: Sequence[int]) -> tensor_pb2.TensorShapeProto:
    return tensor_pb2.TensorShapeProto(dim=[tensor_pb2.TensorShapeProto.Dim(size=int(d)) for d in dims])


def string_tensor(texts: Sequence[str]) -> TensorProto:
    """A ``DT_STRING`` vector of UTF-8 texts, what ``tf.make_tensor_proto`` would build."""
    return TensorProto(dtype=tensor_pb2.DT_STRING, tensor_shape=_shape([len(texts)]),
                       string_val=[t.encode("utf-8") for t in texts])


def texts_of(tensor: TensorProto) -> list[str]:
    """The texts of a ``DT_STRING`` vector; ``ValueError`` for any other tensor or bad UTF-8."""
    if tensor.dtype != tensor_pb2.DT_STRING:
        raise ValueError(f"expects a DT_STRING tensor, got {_dtype_name(tensor.dtype)}")
    dims = [d.size for d in tensor.tensor_shape.dim]
    if len(dims) != 1 or dims[0] != len(tensor.string_val):
        raise ValueError(f"expects a vector of {len(tensor.string_val)} strings, got shape {dims}")
    return [value.decode("utf-8") for value in tensor.string_val]


def float_tensor(array: np.ndarray) -> TensorProto:
    """A ``DT_FLOAT`` tensor in ``tensor_content`` (packed little-endian), as TF Serving answers."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return TensorProto(dtype=tensor_pb2.DT_FLOAT, tensor_shape=_shape(array.shape),
                       tensor_content=array.tobytes())


def array_of(tensor: TensorProto) -> np.ndarray:
    """A float tensor as ``float32`` numpy, from ``tensor_content`` or ``float_val``."""
    if tensor.dtype != tensor_pb2.DT_FLOAT:
        raise ValueError(f"expects a DT_FLOAT tensor, got {_dtype_name(tensor.dtype)}")
    dims = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype="<f4")
    else:
        values = np.asarray(tensor.float_val, dtype=np.float32)
        if values.size == 1 and int(np.prod(dims)) > 1:
            values = np.full(int(np.prod(dims)), values[0], dtype=np.float32)
    return values.astype(np.float32, copy=False).reshape(dims)


def _dtype_name(value: int) -> str:
    try:
        return tensor_pb2.DataType.Name(value)
    except ValueError:
        return f"data type {value}"
