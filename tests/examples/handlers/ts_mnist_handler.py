"""A handler written against TorchServe's own ``ts`` package, as TorchServe's MNIST example is.

Archived by the real ``torch-model-archiver`` in the tests: the runtime must run it unmodified.
"""

from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier


class TorchServeMNISTClassifier(ImageClassifier):
    image_processing = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    def postprocess(self, data):
        return data.argmax(1).tolist()
