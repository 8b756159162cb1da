"""The gRPC servicers of the public API (protos/mutate/v1/public_api.proto).

Each handler authenticates the call (`Auth.principal`), scopes everything to
the caller's organization and raises domain errors, which the server's error
interceptor turns into status codes.
"""
