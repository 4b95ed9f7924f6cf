"""make test's two workers: the e2e tests are one unit of work (one worker, in order), others by module."""

from __future__ import annotations

from e2e.distribution import E2EOnOneWorker


def test_every_e2e_test_is_one_unit_and_the_other_tests_go_by_module_or_class() -> None:
    # Only the unit a node id belongs to is asked here: no workers, so no scheduler state (xdist's __init__
    # wants their --tx specs).
    unit = E2EOnOneWorker.__new__(E2EOnOneWorker)._split_scope
    e2e = ["e2e/images/test_images.py::test_image_is_squashed_and_runs_as_the_fixed_non_root_user[runtime]",
           "e2e/node/test_node.py::test_node_is_ready_with_its_taint_removed_within_60_seconds",
           "e2e/test_demo.py::test_predict_curl_through_the_ingress_answers_2"]
    assert {unit(nodeid) for nodeid in e2e} == {"e2e"}
    grpc = "tests/runtime/test_grpc.py"
    assert unit(f"{grpc}::test_model_infer[raw]") == unit(f"{grpc}::test_server_live") == grpc
    render = "tests/operator/test_render.py"
    assert unit(f"{render}::TestRender::test_ports") == f"{render}::TestRender"
    assert unit("tests/e2e_like/test_x.py::test_y") == "tests/e2e_like/test_x.py"
