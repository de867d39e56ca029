"""Hostile gRPC calls against one node: prints, per case, the status code
name and message the node answered with (or "OK"), as one JSON object.

Usage: grpc_hostile.py GRPC_ADDRESS MAX_MESSAGE_BYTES
The node serves model "echo" (synthetic: x FP32 [-1,-1]).
"""

import json
import struct
import sys

import grpc
from tritonclient.grpc import service_pb2

ADDRESS, MAX_MESSAGE = sys.argv[1], int(sys.argv[2])
SERVICE = "/inference.GRPCInferenceService/"
channel = grpc.insecure_channel(ADDRESS, options=[("grpc.max_send_message_length", -1)])


def raw_call(method, payload):
    call = channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
    try:
        call(payload, timeout=10)
        return ["OK", ""]
    except grpc.RpcError as error:
        return [error.code().name, error.details() or ""]


def request(model="echo", shape=(1, 2), datatype="FP32", raw=None, inputs=1, **extra):
    message = service_pb2.ModelInferRequest(model_name=model, **extra)
    for i in range(inputs):
        tensor = message.inputs.add()
        tensor.name, tensor.datatype = "x" if i == 0 else f"x{i}", datatype
        tensor.shape.extend(shape)
    if raw is not None:
        message.raw_input_contents.extend(raw)
    return message.SerializeToString()


def floats(*values):
    return struct.pack(f"<{len(values)}f", *values)


cases = {
    "valid request": ("ModelInfer", request(raw=[floats(1.0, 2.0)])),
    "malformed protobuf": ("ModelInfer", b"\x0a\xff\xff\xff\xff\x0f"),
    "truncated protobuf": ("ModelInfer", request(raw=[floats(1.0, 2.0)])[:-3]),
    "wrong wire type": ("ModelInfer", b"\x2d\x00\x00\x00\x00"),
    "message over the size limit": ("ModelInfer", request(raw=[b"\0" * (MAX_MESSAGE + 1024)])),
    "shape over the element limit": ("ModelInfer", request(shape=(1 << 20, 1 << 20), raw=[floats(1.0)])),
    "negative dimension": ("ModelInfer", request(shape=(-1, 2), raw=[floats(1.0, 2.0)])),
    "raw contents shorter than the shape": ("ModelInfer", request(shape=(4, 4), raw=[floats(1.0, 2.0)])),
    "raw contents not whole elements": ("ModelInfer", request(raw=[b"\0" * 7])),
    "more raw contents than inputs": ("ModelInfer", request(raw=[floats(1.0, 2.0), floats(3.0)])),
    "no contents": ("ModelInfer", request()),
    "unknown datatype": ("ModelInfer", request(datatype="COMPLEX", raw=[floats(1.0, 2.0)])),
    "bytes datatype": ("ModelInfer", request(datatype="BYTES", raw=[b"\x01\0\0\0a\x01\0\0\0b"])),
    "unknown model": ("ModelInfer", request(model="nope", raw=[floats(1.0, 2.0)])),
    "empty request": ("ModelInfer", b""),
    "unknown version": ("ModelInfer", request(raw=[floats(1.0, 2.0)], model_version="9")),
    "bad priority": ("ModelInfer", service_pb2.ModelInferRequest(
        model_name="echo", parameters={"priority": service_pb2.InferParameter(string_param="high")},
    ).SerializeToString()),
    "metadata of an unknown model": ("ModelMetadata", service_pb2.ModelMetadataRequest(name="nope").SerializeToString()),
    "config of an unknown model": ("ModelConfig", service_pb2.ModelConfigRequest(name="nope").SerializeToString()),
    "statistics of an unknown model": (
        "ModelStatistics", service_pb2.ModelStatisticsRequest(name="nope").SerializeToString()),
    "model load": ("RepositoryModelLoad", service_pb2.RepositoryModelLoadRequest(model_name="x").SerializeToString()),
    "unknown method": ("NoSuchMethod", b""),
}
answers = {name: raw_call(method, payload) for name, (method, payload) in cases.items()}

# A stream whose messages are each wrong answers each with an error and
# keeps going; a good message after them still runs.
stub = channel.stream_stream(SERVICE + "ModelStreamInfer", request_serializer=None,
                             response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
stream_messages = [request(model="nope", raw=[floats(1.0, 2.0)]), request(shape=(9,), raw=[floats(1.0)]),
                   request(raw=[floats(5.0, 6.0)], id="good")]
replies = list(stub(iter(stream_messages), timeout=10))
answers["stream"] = [r.error_message or f"ok:{r.infer_response.id}" for r in replies]
answers["valid request after all"] = raw_call("ModelInfer", request(raw=[floats(1.0, 2.0)]))
print(json.dumps(answers))
