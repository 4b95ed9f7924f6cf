"""The ResNet-18 model file of the bench's archive (``torch-model-archiver --model-file``).

torchvision's own architecture, built the way TorchServe's image_classifier examples build theirs: a class
with no constructor arguments, whose state dict is the archive's serialized file.
"""

from torchvision.models.resnet import BasicBlock, ResNet


class ResNet18(ResNet):
    def __init__(self) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2])
