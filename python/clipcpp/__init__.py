"""clipcpp: CLIP in C++ from Python.

    import clipcpp
    m = clipcpp.load("models/cifar10-vit-tiny")          # or a .safetensors file, or ORG/NAME pulled
    img = m.encode_image(["cat.jpg", "dog.jpg"])          # float32 (2, embed_dim), L2-normalized
    txt = m.encode_text(["a photo of a cat", "a photo of a dog"])
    probs = m.zeroshot(img[0], ["cat", "dog"])            # [(label, probability)], best first
    ids = clipcpp.tokenize(["a diagram"])                 # int32 (1, 77), as OpenAI's clip.tokenize

Images: paths (str or os.PathLike), a uint8 array (H, W, 3) or (N, H, W, 3), or a list of arrays.
The GIL is released while the library computes. Library errors raise clipcpp.ClipError (a
RuntimeError) with the library's message; wrong types and shapes raise TypeError / ValueError.
"""
import os as _os

from ._clipcpp import ClipError, Model, version  # noqa: F401
from ._clipcpp import load as _load
from ._clipcpp import tokenize as _tokenize

__all__ = ["load", "tokenize", "Model", "ClipError", "version"]


def _fspaths(x):
    if isinstance(x, _os.PathLike):
        return _os.fspath(x)
    if isinstance(x, (list, tuple)) and x and all(isinstance(p, (str, _os.PathLike)) for p in x):
        return [_os.fspath(p) for p in x]
    return x


def load(path, precision="fp32", threads=0, vocab=""):
    """A model: a .safetensors file, a model directory, or ORG/NAME pulled with `clip pull`."""
    return _load(_os.fspath(path), precision, threads, _os.fspath(vocab) if vocab else "")


def tokenize(texts, context_length=77, truncate=False, vocab=""):
    """Token ids as OpenAI's clip.tokenize: int32 (N, context_length), start/end tokens, zero padding."""
    return _tokenize(texts, context_length, truncate, _os.fspath(vocab) if vocab else "")


_encode_image = Model.encode_image


def _encode_image_paths(self, images, normalize=True, batch_size=32):
    return _encode_image(self, _fspaths(images), normalize, batch_size)


Model.encode_image = _encode_image_paths
