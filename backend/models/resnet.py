"""ResNet-50 in plain PyTorch with torchvision's parameter names, without the classifier.

SoftCon's ResNet-50 checkpoints are torchvision ``resnet50`` state dicts with ``conv1`` widened to
the sensor's bands and ``fc`` replaced by an identity, so this module reproduces torchvision's
architecture (v1.5: the stride sits on the 3×3 convolution) and key names exactly.
"""

from __future__ import annotations

from torch import Tensor, nn

#: Bottleneck blocks per stage of ResNet-50.
RESNET50_LAYERS: tuple[int, int, int, int] = (3, 4, 6, 3)

#: Width of the pooled output (512 · Bottleneck.expansion).
RESNET50_DIM = 2048


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: 1×1 reduce, 3×3 (strided), 1×1 expand, plus a shortcut."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual bottleneck step."""
        identity = x if self.downsample is None else self.downsample(x)
        out: Tensor = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.relu(out + identity)
        return out


class ResNet50(nn.Module):
    """ResNet-50 backbone that returns the global-average-pooled 2048-d feature.

    Args:
        in_chans: Number of input bands (13 for Sentinel-2 L1C, 2 for Sentinel-1 GRD).
    """

    embed_dim = RESNET50_DIM

    def __init__(self, in_chans: int = 13) -> None:
        super().__init__()
        self.in_chans = in_chans
        self._inplanes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, RESNET50_LAYERS[0])
        self.layer2 = self._make_layer(128, RESNET50_LAYERS[1], stride=2)
        self.layer3 = self._make_layer(256, RESNET50_LAYERS[2], stride=2)
        self.layer4 = self._make_layer(512, RESNET50_LAYERS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample: nn.Module | None = None
        out_planes = planes * Bottleneck.expansion
        if stride != 1 or self._inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        layers = [Bottleneck(self._inplanes, planes, stride, downsample)]
        self._inplanes = out_planes
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_feature_map(self, x: Tensor) -> Tensor:
        """The last stage's feature map ``[B, 2048, H/32, W/32]`` (before pooling)."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected a batch shaped [B, {self.in_chans}, H, W], got {tuple(x.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Pooled embedding ``[B, 2048]`` for a batch ``[B, in_chans, H, W]``."""
        pooled: Tensor = self.avgpool(self.forward_feature_map(x))
        return pooled.flatten(1)
