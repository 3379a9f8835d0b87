"""An open_clip-shaped front, so that code written for open_clip changes one import:

    import clipcpp.open_clip as open_clip
    model, _, preprocess = open_clip.create_model_and_transforms("models/cifar10-vit-tiny")
    tokenizer = open_clip.get_tokenizer("models/cifar10-vit-tiny")
    image = preprocess(PIL.Image.open("cat.jpg"))[None]    # or a path
    text = tokenizer(["a diagram", "a dog", "a cat"])
    image_features = model.encode_image(image)
    text_features = model.encode_text(text)

What differs from open_clip: no torch; arrays are numpy; `preprocess` only converts an image
(a PIL image, a path or an array) to uint8 RGB and the library does CLIP's exact resize, crop
and normalization inside encode_image; features are always L2-normalized (open_clip's
`normalize=False` raises); the model name is a path, a .safetensors file or a pulled ORG/NAME
(`pretrained` is ignored); there is no training or `logit_scale` parameter, only its value.
"""
import os

import numpy as np

from . import load, tokenize


class _Image:
    """What `preprocess` returns: the image as uint8 RGB, stacked by [None] or np.stack."""


def _to_rgb(image):
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if hasattr(image, "convert"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError("expected a PIL image, a path, or a uint8 array (H, W, 3)")
    return a


class CLIP:
    def __init__(self, native):
        self._m = native
        self.embed_dim = native.embed_dim
        self.context_length = native.context_length

    def encode_image(self, images, normalize=True):
        if not normalize:
            raise ValueError("normalize=False is not supported: clipcpp returns normalized features")
        if isinstance(images, (str, os.PathLike)):
            images = [os.fspath(images)]
        if isinstance(images, np.ndarray) and images.dtype == object:
            images = list(images)
        if isinstance(images, (list, tuple)) and images and isinstance(images[0], str):
            return self._m.encode_image(list(images))
        return self._m.encode_image(images)

    def encode_text(self, tokens, normalize=True):
        if not normalize:
            raise ValueError("normalize=False is not supported: clipcpp returns normalized features")
        return self._m.encode_tokens(np.asarray(tokens, dtype=np.int32))

    @property
    def logit_scale(self):
        return np.float32(np.log(self._m.logit_scale))

    def eval(self):
        return self


def create_model_and_transforms(model_name, pretrained=None, **kwargs):
    model = CLIP(load(model_name, threads=kwargs.get("threads", 0)))
    return model, None, _to_rgb


def create_model(model_name, pretrained=None, **kwargs):
    return create_model_and_transforms(model_name, pretrained, **kwargs)[0]


def get_tokenizer(model_name=None, context_length=None):
    model = load(model_name) if model_name else None
    ctx = context_length or (model.context_length if model else 77)

    def tokenizer(texts, context_length=None):
        if model is not None and not context_length:
            return model.tokenize([texts] if isinstance(texts, str) else list(texts), True)
        return tokenize([texts] if isinstance(texts, str) else list(texts), context_length or ctx, True)

    return tokenizer
