"""User strings reach the Knative Service as data: none can change the rendered structure."""

from __future__ import annotations

from typing import Any

import pytest
from isvc_operator.config import default_config
from isvc_operator.render import render_knative_service

HOSTILE = [
    'quote " and \' inside',
    "line one\nline two: injected\n  nested: true",
    "{{ namespace }} {% if true %}x{% endif %}",
    "key: value",
    "- list item\n- another",
    "]]}}\"}, {\"name\": \"evil\"",
    "#! comment &anchor *alias",
    "</script><b>tag</b> & \\u0000",
]


def shape(value: Any) -> Any:
    """The structure of a document: dict keys and list lengths, with every leaf string erased."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def hostile_isvc(isvc_factory, text: str) -> dict[str, Any]:
    isvc = isvc_factory(
        serviceAccountName=text,
        nodeSelector={"pool": text},
        pytorch={
            "storageUri": f"gs://bucket/{text}",
            "args": [text],
            "env": [{"name": "USER_VALUE", "value": text}],
            "image": text,
        },
    )
    isvc["metadata"]["annotations"] = {"note": text}
    isvc["metadata"]["labels"] = {"team": text}
    return isvc


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_cannot_change_the_rendered_structure(isvc_factory, text: str) -> None:
    benign = render_knative_service(hostile_isvc(isvc_factory, "benign"), default_config())
    hostile = render_knative_service(hostile_isvc(isvc_factory, text), default_config())
    assert shape(hostile) == shape(benign)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_arrive_byte_for_byte(isvc_factory, text: str) -> None:
    ksvc = render_knative_service(hostile_isvc(isvc_factory, text), default_config())
    pod = ksvc["spec"]["template"]["spec"]
    [main] = pod["containers"]
    [init] = pod["initContainers"]
    assert main["args"][-1] == text
    assert main["env"][-1] == {"name": "USER_VALUE", "value": text}
    assert main["image"] == text
    assert init["args"][0] == f"gs://bucket/{text}"
    assert pod["serviceAccountName"] == text and pod["nodeSelector"] == {"pool": text}
    assert ksvc["spec"]["template"]["metadata"]["annotations"]["note"] == text
    assert ksvc["metadata"]["labels"]["team"] == text


def test_hostile_isvc_name_stays_a_string_in_names_and_args(isvc_factory) -> None:
    isvc = isvc_factory()
    isvc["metadata"]["name"] = 'x"\n  evil: {{ 1 }}'
    ksvc = render_knative_service(isvc, default_config())
    assert ksvc["metadata"]["name"] == 'x"\n  evil: {{ 1 }}-predictor-default'
    assert "evil" not in ksvc["metadata"]
    assert ksvc["spec"]["template"]["spec"]["containers"][0]["args"][3] == 'x"\n  evil: {{ 1 }}'
