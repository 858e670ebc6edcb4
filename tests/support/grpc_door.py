"""A small gRPC service for the L7 tests: Cloud City's door manager (two methods).

The stubs are generated at run time with grpcio-tools from the proto below, into a
temporary directory. ``python -m tests.support.grpc_door serve PORT`` serves on
``[::]:PORT``; ``python -m tests.support.grpc_door call HOST:PORT METHOD`` calls
``GetName`` or ``SetAccessCode`` and prints the gRPC status name (``OK``,
``PERMISSION_DENIED``, ...) and the reply.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

PROTO = """
syntax = "proto3";
package cloudcity;
service DoorManager {
  rpc GetName(DoorRequest) returns (DoorReply) {}
  rpc SetAccessCode(DoorRequest) returns (DoorReply) {}
}
message DoorRequest { uint32 door_id = 1; }
message DoorReply { string text = 1; }
"""


def _stubs():  # type: ignore[no-untyped-def]
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="cpyt-grpc-")
    path = os.path.join(out, "cloudcity.proto")
    with open(path, "w") as f:
        f.write(PROTO)
    if protoc.main(["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}",
                    path]) != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, out)
    return importlib.import_module("cloudcity_pb2"), importlib.import_module("cloudcity_pb2_grpc")


def serve(port: int) -> None:
    from concurrent import futures

    import grpc

    pb2, pb2_grpc = _stubs()

    class Doors(pb2_grpc.DoorManagerServicer):
        def GetName(self, request, context):  # noqa: N802 - gRPC's name
            return pb2.DoorReply(text=f"door {request.door_id}: Spaceport Door #1")

        def SetAccessCode(self, request, context):  # noqa: N802
            return pb2.DoorReply(text="access code changed")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb2_grpc.add_DoorManagerServicer_to_server(Doors(), server)
    server.add_insecure_port(f"[::]:{port}")
    server.start()
    server.wait_for_termination()


def call(target: str, method: str) -> int:
    import grpc

    pb2, pb2_grpc = _stubs()
    with grpc.insecure_channel(target) as channel:
        stub = pb2_grpc.DoorManagerStub(channel)
        try:
            reply = getattr(stub, method)(pb2.DoorRequest(door_id=1), timeout=5)
        except grpc.RpcError as exc:
            print(exc.code().name, exc.details())
            return 1
        print("OK", reply.text)
        return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(call(sys.argv[2], sys.argv[3]))
