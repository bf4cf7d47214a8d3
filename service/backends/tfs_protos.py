"""TF Serving's protobuf messages without TensorFlow's runtime, and tensor conversions.

The tensorflow-serving-api modules import ``tensorflow.core.framework.tensor_pb2``; importing
any ``tensorflow.*`` submodule normally runs ``tensorflow/__init__.py``, which loads the whole
runtime (seconds of start-up and hundreds of MB) although only a few generated message classes
are needed. When TensorFlow is not loaded yet, a bare package object stands in for
``tensorflow`` while the generated modules are imported and is removed right after, so a later
``import tensorflow`` still runs the real package (and reuses these same message modules).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Sequence

import numpy as np


_MODULES = (
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.framework.tensor_shape_pb2",
    "tensorflow.core.framework.types_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.model_pb2",
    "tensorflow_serving.apis.model_service_pb2_grpc",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow_serving.apis.prediction_service_pb2_grpc",
)


def _import_protos() -> list[types.ModuleType]:
    if "tensorflow" in sys.modules:
        return [importlib.import_module(name) for name in _MODULES]
    spec = importlib.util.find_spec("tensorflow")
    stand_in = types.ModuleType("tensorflow")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = stand_in
    try:
        return [importlib.import_module(name) for name in _MODULES]
    finally:
        if sys.modules.get("tensorflow") is stand_in:
            del sys.modules["tensorflow"]


(tensor_pb2, tensor_shape_pb2, types_pb2, get_model_status_pb2, model_pb2, model_service_pb2_grpc,
 predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc) = _import_protos()

TensorProto = tensor_pb2.TensorProto


def _shape(dims: Sequence[int]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in dims])


def string_tensor(texts: Sequence[str]) -> TensorProto:
    """A ``DT_STRING`` vector of UTF-8 texts, what ``tf.make_tensor_proto`` would build."""
    return TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=_shape([len(texts)]),
                       string_val=[t.encode("utf-8") for t in texts])


def texts_of(tensor: TensorProto) -> list[str]:
    """The texts of a ``DT_STRING`` vector; ``ValueError`` for any other tensor or bad UTF-8."""
    if tensor.dtype != types_pb2.DT_STRING:
        raise ValueError(f"expects a DT_STRING tensor, got {types_pb2.DataType.Name(tensor.dtype)}")
    dims = [d.size for d in tensor.tensor_shape.dim]
    if len(dims) != 1 or dims[0] != len(tensor.string_val):
        raise ValueError(f"expects a vector of {len(tensor.string_val)} strings, got shape {dims}")
    return [value.decode("utf-8") for value in tensor.string_val]


def float_tensor(array: np.ndarray) -> TensorProto:
    """A ``DT_FLOAT`` tensor in ``tensor_content`` (packed little-endian), as TF Serving answers."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=_shape(array.shape),
                       tensor_content=array.tobytes())


def array_of(tensor: TensorProto) -> np.ndarray:
    """A float tensor as ``float32`` numpy, from ``tensor_content`` or ``float_val``."""
    if tensor.dtype != types_pb2.DT_FLOAT:
        raise ValueError(f"expects a DT_FLOAT tensor, got {types_pb2.DataType.Name(tensor.dtype)}")
    dims = [d.size for d in tensor.tensor_shape.dim]
    if tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype="<f4")
    else:
        values = np.asarray(tensor.float_val, dtype=np.float32)
        if values.size == 1 and int(np.prod(dims)) > 1:
            values = np.full(int(np.prod(dims)), values[0], dtype=np.float32)
    return values.astype(np.float32, copy=False).reshape(dims)
