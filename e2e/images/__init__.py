"""The images built here with buildah (build.sh) and what each is keyed on (source_key.py)."""
