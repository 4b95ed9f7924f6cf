"""The gRPC side of the runtime (Open Inference Protocol, ``inference.GRPCInferenceService``).

Importing this package imports nothing heavy: :mod:`.ports` is pure configuration, :mod:`.stubs` is the
one place the generated messages and service stubs come from.
"""
