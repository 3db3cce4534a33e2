"""A Python client of VoiceModelService: grpcio and stubs generated from proto/ by protoc.

It creates a model, uploads a file to it (client stream), reads it back (server stream), and
decodes the google.rpc.ErrorInfo of a failed call. It prints one JSON line of what it saw.

Settings (environment): VOICEMODEL_ADDR (host:port of the gRPC listener, default
127.0.0.1:50051), VOICEMODEL_TOKEN (a bearer token, e.g. `npm run -s token -- alice`).
The stubs must be importable (clients/run.sh generates them and sets PYTHONPATH).
"""

import hashlib
import json
import os
import sys
import uuid

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from voicemodel.v1 import model_files_pb2, voice_model_service_pb2, voice_model_service_pb2_grpc

CHUNK = 256 * 1024


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo inside the google.rpc.Status of the grpc-status-details-bin trailer."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        raise RuntimeError(f"no error details in {error}")
    status = status_pb2.Status.FromString(raw)
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise RuntimeError(f"no google.rpc.ErrorInfo among {[d.type_url for d in status.details]}")


def main() -> int:
    addr = os.environ.get("VOICEMODEL_ADDR", "127.0.0.1:50051")
    token = os.environ["VOICEMODEL_TOKEN"]
    auth = (("authorization", f"Bearer {token}"),)
    options = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    with grpc.insecure_channel(addr, options=options) as channel:
        stub = voice_model_service_pb2_grpc.VoiceModelServiceStub(channel)

        metadata = struct_pb2.Struct()
        metadata.update({"client": "python", "grpcio": grpc.__version__})
        created = stub.CreateVoiceModel(
            voice_model_service_pb2.CreateVoiceModelRequest(
                provider="xtts-v2", model_path=f"python/{uuid.uuid4().hex}.pth", quality_score=0.91, metadata=metadata
            ),
            metadata=auth,
            timeout=30,
        ).model

        data = os.urandom(CHUNK * 10 + 123)
        digest = hashlib.sha256(data).hexdigest()

        def upload():
            header = model_files_pb2.UploadModelFileHeader(model_id=created.id, sha256=digest, size_bytes=len(data))
            yield model_files_pb2.UploadModelFileRequest(header=header)
            for start in range(0, len(data), CHUNK):
                yield model_files_pb2.UploadModelFileRequest(chunk=data[start : start + CHUNK])

        uploaded = stub.UploadModelFile(upload(), metadata=auth, timeout=60)

        received = bytearray()
        messages = 0
        first = None
        for part in stub.ReadModelFile(model_files_pb2.ReadModelFileRequest(model_id=created.id), metadata=auth, timeout=60):
            first = first or part
            received += part.chunk
            messages += 1

        try:
            stub.GetVoiceModel(voice_model_service_pb2.GetVoiceModelRequest(model_id=str(uuid.uuid4())), metadata=auth, timeout=30)
            raise RuntimeError("GetVoiceModel of an unknown id succeeded")
        except grpc.RpcError as error:
            info = error_info(error)
            failure = {
                "code": error.code().name,
                "reason": info.reason,
                "domain": info.domain,
                "metadata": dict(info.metadata),
            }

    print(
        json.dumps(
            {
                "client": "python",
                "model": {"id": created.id, "userId": created.user_id, "metadata": dict(created.metadata.items())},
                "upload": {"sizeBytes": uploaded.file.size_bytes, "sha256": uploaded.file.sha256},
                "read": {
                    "bytes": len(received),
                    "messages": messages,
                    "sha256": hashlib.sha256(received).hexdigest(),
                    "reportedSha256": first.sha256 if first else "",
                    "matches": bytes(received) == data,
                },
                "sentSha256": digest,
                "error": failure,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
