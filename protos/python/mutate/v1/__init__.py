"""Generated protobuf and gRPC modules of the Mutate API (mutate.v1)."""
