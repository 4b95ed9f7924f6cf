"""The templates ship as package data (isvc_operator.templates, the repository's templates/) and a cluster
admin's directory (ISVC_TEMPLATES_DIR) overrides them file by file."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from isvc_operator.config import default_config
from isvc_operator.render import RenderError, render_knative_service
from operator_samples import REPO_ROOT

TEMPLATES = REPO_ROOT / "templates"


def test_the_packaged_templates_are_the_repositorys_templates() -> None:
    packaged = importlib.resources.files("isvc_operator.templates")
    names = sorted(item.name for item in packaged.iterdir() if item.name.endswith(".j2"))
    assert names == sorted(path.name for path in TEMPLATES.glob("*.j2"))
    for name in names:
        assert (packaged / name).read_text() == (TEMPLATES / name).read_text()


def test_an_admins_template_directory_overrides_file_by_file(torchserve, tmp_path: Path, monkeypatch) -> None:
    pod = (TEMPLATES / "predictor-pod.yaml.j2").read_text()
    (tmp_path / "predictor-pod.yaml.j2").write_text(
        pod.replace("name: {{ c.name | tojson }}", 'name: {{ c.name | tojson }}\nimagePullPolicy: "Always"'))
    monkeypatch.setenv("ISVC_TEMPLATES_DIR", str(tmp_path))
    ksvc = render_knative_service(torchserve, default_config())  # knative-service.yaml.j2: the packaged one
    pod_spec = ksvc["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["imagePullPolicy"] == "Always"
    assert pod_spec["initContainers"][0]["imagePullPolicy"] == "Always"
    monkeypatch.delenv("ISVC_TEMPLATES_DIR")
    assert "imagePullPolicy" not in render_knative_service(torchserve, default_config())["spec"]["template"][
        "spec"]["containers"][0]


def test_a_broken_override_is_a_render_error(torchserve, tmp_path: Path) -> None:
    (tmp_path / "knative-service.yaml.j2").write_text("spec: {{ no_such_value }}\n")
    with pytest.raises(RenderError, match=r"template knative-service\.yaml\.j2 failed"):
        render_knative_service(torchserve, default_config(), tmp_path)
