"""The MNIST example's handler, reporting with each digit how many rows shared its handler call.
The archive carries ``examples/mnist/mnist_handler.py`` as an extra file (on the model's path)."""

from mnist_handler import MNISTDigitClassifier


class MNISTBatchProbe(MNISTDigitClassifier):
    def postprocess(self, data):
        digits = data.argmax(1).tolist()
        return [{"digit": digit, "batch_rows": len(digits)} for digit in digits]
