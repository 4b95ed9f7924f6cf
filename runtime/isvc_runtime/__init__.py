"""The torch runtime: serves TorchServe model stores over the KServe v1 and v2 protocols.

Importing this package must not import torch: the storage initializer (``isvc_runtime.storage``)
ships in an image without it.
"""

__version__ = "0.1.0"
