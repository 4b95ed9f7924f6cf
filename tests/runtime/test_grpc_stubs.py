"""The gRPC stubs the runtime builds on (isvc_runtime.grpc.stubs): the Open Inference Protocol's service
with the methods and fields KServe's and Triton's clients use, and gRPC health for probes."""

from __future__ import annotations

from isvc_runtime.grpc import stubs


def test_inference_service_has_every_method_clients_call() -> None:
    service = stubs.pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == stubs.SERVICE_NAME == "inference.GRPCInferenceService"
    assert {m.name for m in service.methods} >= set(stubs.METHODS)
    for method in stubs.METHODS:
        assert hasattr(stubs.GRPCInferenceServiceServicer, method)
        assert service.methods_by_name[method].input_type.name == f"{method}Request"
        assert service.methods_by_name[method].output_type.name == f"{method}Response"


def test_infer_request_and_response_carry_raw_contents_and_parameters() -> None:
    request = stubs.pb.ModelInferRequest(model_name="mnist", model_version="1.0", id="r1")
    request.parameters["binary_data_output"].bool_param = True
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 2])
    tensor.parameters["content_type"].string_param = "tensor"
    request.raw_input_contents.append(b"\x00\x00\x80?\x00\x00\x00@")
    request.outputs.add(name="output-0").parameters["binary_data"].bool_param = True

    decoded = stubs.pb.ModelInferRequest.FromString(request.SerializeToString())
    assert decoded == request
    assert decoded.HasField("model_version")
    assert decoded.inputs[0].parameters["content_type"].WhichOneof("parameter_choice") == "string_param"

    response = stubs.pb.ModelInferResponse(model_name="mnist", id="r1")
    response.outputs.add(name="output-0", datatype="INT64", shape=[1]).parameters["x"].int64_param = 3
    response.raw_output_contents.append((2).to_bytes(8, "little"))
    response.parameters["batched"].bool_param = False
    assert stubs.pb.ModelInferResponse.FromString(response.SerializeToString()) == response


def test_tensor_contents_has_a_field_per_datatype_family() -> None:
    fields = {f.name for f in stubs.pb.InferTensorContents.DESCRIPTOR.fields}
    assert fields == {
        "bool_contents",
        "int_contents",
        "int64_contents",
        "uint_contents",
        "uint64_contents",
        "fp32_contents",
        "fp64_contents",
        "bytes_contents",
    }


def test_metadata_messages_have_the_protocols_fields() -> None:
    server = {f.name for f in stubs.pb.ServerMetadataResponse.DESCRIPTOR.fields}
    model = {f.name for f in stubs.pb.ModelMetadataResponse.DESCRIPTOR.fields}
    assert server == {"name", "version", "extensions"}
    assert model >= {"name", "versions", "platform", "inputs", "outputs"}
    assert {f.name for f in stubs.pb.ModelReadyRequest.DESCRIPTOR.fields} == {"name", "version"}


def test_grpc_health_service_for_probes() -> None:
    service = stubs.health_pb2.DESCRIPTOR.services_by_name["Health"]
    assert service.full_name == stubs.HEALTH_SERVICE_NAME
    assert {m.name for m in service.methods} >= {"Check", "Watch"}
    assert stubs.health_pb2.HealthCheckResponse.SERVING == 1
    assert hasattr(stubs.AsyncHealthServicer, "set")
