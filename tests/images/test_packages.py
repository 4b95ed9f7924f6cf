"""pyproject.toml lists the distribution's packages (templates/ is mapped in as isvc_operator.templates, so
they cannot be discovered): the list must stay every package under operator/ and runtime/, and the templates
must ship as package data."""

from __future__ import annotations

import tomllib

from dockerfile_stages import REPO_ROOT

SETUPTOOLS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_under_the_source_roots_is_listed() -> None:
    found = {
        ".".join(init.parent.relative_to(REPO_ROOT / root).parts)
        for root in ("operator", "runtime")
        for init in (REPO_ROOT / root).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert set(SETUPTOOLS["packages"]) == found | {"isvc_operator.templates"}


def test_templates_ship_as_the_package_data_of_isvc_operator_templates() -> None:
    assert SETUPTOOLS["package-dir"]["isvc_operator.templates"] == "templates"
    assert SETUPTOOLS["package-data"]["isvc_operator.templates"] == ["*.j2"]
    assert (REPO_ROOT / "templates" / "__init__.py").is_file()  # a regular package: editable installs find it
