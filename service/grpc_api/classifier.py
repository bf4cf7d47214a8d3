"""The ``newsclf.v1.Classifier`` servicer: message translation only, decisions live in the core."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import grpc

from scoring.errors import ServiceError, status_of
from service.core import ClassifierService, ClassifyRequest, ClassifyResult, Document, ModelStatus
from service.grpc_api.errors import grpc_errors
from service.protos import classifier_pb2 as pb
from service.protos import classifier_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Classifier"]
SERVICE_NAME = SERVICE.full_name
STREAM_WINDOW = 16  # request messages of one stream being scored at once


def request_from_proto(message: pb.ClassifyRequest) -> ClassifyRequest:
    choice = message.WhichOneof("version_choice")
    return ClassifyRequest(
        documents=[Document(text=d.text, id=d.id) for d in message.documents],
        model=message.model,
        version=message.version if choice == "version" else None,
        version_label=message.version_label if choice == "version_label" else None,
        top_k=message.top_k or None,
    )


def result_to_proto(result: ClassifyResult) -> pb.ClassifyResponse:
    response = pb.ClassifyResponse(model=result.model, version=result.version, results=[
        pb.DocumentResult(id=r.id, abstained=r.abstained,
                          topics=[pb.Topic(name=t.name, probability=t.probability) for t in r.topics])
        for r in result.results])
    if result.abstain_threshold is not None:
        response.abstain_threshold = result.abstain_threshold
    return response


def model_to_proto(status: ModelStatus) -> pb.Model:
    versions = []
    for v in status.info.versions:
        meta = v.metadata
        message = pb.ModelVersion(version=v.version, state=v.state, metrics=meta.metrics,
                                  labels=meta.labels, variant=meta.variant)
        if meta.threshold is not None:
            message.abstain_threshold = meta.threshold.value
        versions.append(message)
    return pb.Model(name=status.info.name, versions=versions,
                    version_labels=status.info.version_labels, ready=status.ready)


class ClassifierServicer(pb_grpc.ClassifierServicer):
    def __init__(self, core: ClassifierService, stream_workers: int = 32):
        self.core = core
        self._stream_pool = ThreadPoolExecutor(max_workers=stream_workers, thread_name_prefix="grpc-stream")

    def close(self) -> None:
        self._stream_pool.shutdown(wait=True)

    def Classify(self, request, context):
        with grpc_errors(context):
            result = self.core.classify(request_from_proto(request), timeout=context.time_remaining(),
                                        transport="grpc", method="Classify")
            return result_to_proto(result)

    def ListModels(self, request, context):
        with grpc_errors(context):
            return pb.ListModelsResponse(models=[model_to_proto(m) for m in self.core.list_models()])

    def ClassifyStream(self, request_iterator, context):
        """Score up to ``STREAM_WINDOW`` messages concurrently, answer them in order."""
        window = threading.BoundedSemaphore(STREAM_WINDOW)
        answers: queue.Queue[Future | None] = queue.Queue()
        reader = threading.Thread(target=self._read_stream, args=(request_iterator, context, window, answers),
                                  name="grpc-stream-reader", daemon=True)
        reader.start()
        sequence = 0
        while True:
            future = answers.get()
            if future is None:
                return
            yield pb.ClassifyStreamResponse(sequence=sequence, **future.result())
            window.release()
            sequence += 1

    def _read_stream(self, request_iterator, context, window: threading.BoundedSemaphore,
                     answers: queue.Queue) -> None:
        try:
            for message in request_iterator:
                while not window.acquire(timeout=0.5):
                    if not context.is_active():
                        return
                answers.put(self._stream_pool.submit(self._answer, message, context))
        except grpc.RpcError:
            pass  # the client cancelled; the handler's generator ends with the call
        except Exception:
            log.exception("reading a ClassifyStream failed")
        finally:
            answers.put(None)

    def _answer(self, message: pb.ClassifyRequest | ServiceError, context) -> dict:
        """One stream message's answer; a message that could not be decoded arrives as its error."""
        if isinstance(message, ServiceError):
            return {"error": pb.Error(code=status_of(message).grpc, message=message.message)}
        try:
            result = self.core.classify(request_from_proto(message), timeout=context.time_remaining(),
                                        transport="grpc", method="ClassifyStream")
            return {"response": result_to_proto(result)}
        except ServiceError as exc:
            return {"error": pb.Error(code=status_of(exc).grpc, message=exc.message)}
        except Exception:
            return {"error": pb.Error(code=grpc.StatusCode.INTERNAL.name, message="internal error")}
