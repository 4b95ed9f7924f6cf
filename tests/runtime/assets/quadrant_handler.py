"""Our ImageClassifier with a plain ToTensor and an argmax answer (the example handler's shape)."""

from isvc_runtime.handlers.image_classifier import ImageClassifier
from torchvision import transforms


class QuadrantClassifier(ImageClassifier):
    image_processing = transforms.ToTensor()

    def postprocess(self, data):
        return data.argmax(1).tolist()
