"""The operator's Jinja2 templates, shipped as the package data of `isvc_operator.templates`.

pyproject.toml maps that package onto this directory; the operator reads the files with
importlib.resources (render.py), so an installed wheel carries them. This file makes the directory a
regular package, which an editable install needs to find it.
"""
