"""The gRPC front end: translates ``newsclf.v1`` messages to the core and back."""
