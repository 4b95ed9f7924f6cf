"""The same classifier written against TorchServe's own ``ts`` package, as users' archives are."""

from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier


class TsQuadrantClassifier(ImageClassifier):
    image_processing = transforms.ToTensor()

    def postprocess(self, data):
        self.context.metrics.add_counter("QuadrantAnswers", len(data))
        return data.argmax(1).tolist()
