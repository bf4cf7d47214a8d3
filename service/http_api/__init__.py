"""The HTTP/JSON front end: the same core and errors as gRPC, translated to JSON."""
