"""A proxyless gRPC client (grpcio's xDS resolver) that resolves a service through an xDS
control plane and calls it: proof that outrigger-xds speaks xDS as gRPC expects.

Calls grpc.health.v1.Health/Check for service "v1" `--calls` times on `xds:///<target>`. The
backend labelled v1 reports "v1" SERVING; the other one does not know it and answers NOT_FOUND,
so the answers tell which endpoint served each call. Prints {"v1": n, "v2": n, "errors": [...]}.
"""
import argparse
import json
import os
import sys
import tempfile

parser = argparse.ArgumentParser()
parser.add_argument("--target", required=True)
parser.add_argument("--xds", required=True, help="host:port of the xDS server")
parser.add_argument("--calls", type=int, default=100)
parser.add_argument("--node-id", default="grpc-client~10.0.0.99~client.default~default.svc.cluster.local")
args = parser.parse_args()

bootstrap = {
    "xds_servers": [{"server_uri": args.xds, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
    "node": {"id": args.node_id, "metadata": {"NAMESPACE": "default", "GENERATOR": "grpc"}},
}
with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    json.dump(bootstrap, f)
os.environ["GRPC_XDS_BOOTSTRAP"] = f.name

import grpc  # noqa: E402  (the bootstrap must be in the environment first)

# HealthCheckRequest{service: "v1"} in protobuf wire format.
REQUEST = b"\x0a\x02v1"
counts = {"v1": 0, "v2": 0, "errors": []}
with grpc.insecure_channel(args.target) as channel:
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    for i in range(args.calls):
        try:
            # The first call waits for xDS resolution; the rest must be served at once.
            check(REQUEST, timeout=20 if i == 0 else 5, wait_for_ready=(i == 0))
            counts["v1"] += 1
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                counts["v2"] += 1
            else:
                counts["errors"].append(f"{e.code()}: {e.details()}")
print(json.dumps(counts))
sys.exit(0)
