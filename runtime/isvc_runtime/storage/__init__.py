"""The storage initializer: copies a model from gs://, s3://, http(s)://, pvc:// or a local path into
a model directory, atomically, and unpacks archives safely.

Run as ``python -m isvc_runtime.storage SRC_URI DEST_DIR``. Nothing here imports torch: this package
ships in the storage-initializer image, which has no torch.
"""
