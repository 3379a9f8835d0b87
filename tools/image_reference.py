#!/usr/bin/env python3
"""Pillow reference for clip's image decoding and preprocessing (issue 4).

Run with Debian's interpreter (python3-pil 9.4, python3-torch, python3-numpy):

  /usr/bin/python3 tools/image_reference.py goldens OUT_DIR [--shared DATA_DIR]
      Writes generated test images (every mode and format, odd sizes) to OUT_DIR/images/, and
      for them and for ../shared/data/sample_photos/* the reference outputs:
        <case>.decoded   Pillow's pixels after Image.open().load() (tobytes; "1" as 0/255)
        <case>.decrgb    convert("RGB") of the decoded image
        <case>.rgb8      Resize + CenterCrop (or pad) + convert("RGB"), S x S x 3 uint8
        <case>.npy       ToTensor + Normalize, [3, S, S] float32 (torch, as torchvision does it)
      and OUT_DIR/manifest.json listing the cases.
      --small: only small generated images (the quick set that test_vision_parity's
      VisionParity suite uses; the full set is VisionParitySlow).
  /usr/bin/python3 tools/image_reference.py bench [--shared DATA_DIR] [--threads N] [--seconds T]
      Times Pillow doing decode + preprocess to 224x224 tensors (images/s).

The transforms are those of openai/CLIP `_transform` (torchvision 0.14) and open_clip's
`image_transform`, re-implemented here over PIL because Debian has no torchvision:
  Resize(S, BICUBIC) -> CenterCrop(S) -> convert("RGB") -> ToTensor() -> Normalize(mean, std).
"""
import argparse
import glob
import json
import os
import struct
import sys
import time
import zlib

import numpy as np
from PIL import Image

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


# ---------------- the reference transforms ----------------
def tv_resize_shortest(img, size, resample):
    # torchvision.transforms.functional.resize with an int size (0.14).
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), resample)


def pad(img, ltrb, fill):
    l, t, r, b = ltrb
    if img.mode == "P":
        out = Image.new("P", (img.width + l + r, img.height + t + b), fill)
        out.putpalette(img.getpalette())
    else:
        bands = len(img.getbands())
        color = fill if bands == 1 else tuple([fill] * bands)
        out = Image.new(img.mode, (img.width + l + r, img.height + t + b), color)
    out.paste(img, (l, t))
    return out


def tv_center_crop(img, size):
    w, h = img.size
    if size > w or size > h:
        ltrb = [(size - w) // 2 if size > w else 0, (size - h) // 2 if size > h else 0,
                (size - w + 1) // 2 if size > w else 0, (size - h + 1) // 2 if size > h else 0]
        img = pad(img, ltrb, 0)
        w, h = img.size
        if (w, h) == (size, size):
            return img
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def oc_resize_keep_ratio_longest(img, size, resample):
    # open_clip ResizeKeepRatio(size, longest=1)
    h, w = img.size[1], img.size[0]
    ratio_h, ratio_w = h / size, w / size
    ratio = max(ratio_h, ratio_w) * 1 + min(ratio_h, ratio_w) * (1.0 - 1)
    nh, nw = [round(x / ratio) for x in (h, w)]
    if (nw, nh) == (w, h):
        return img
    return img.resize((nw, nh), resample)


def oc_center_crop_or_pad(img, size, fill):
    w, h = img.size
    if size > w or size > h:
        ltrb = [(size - w) // 2 if size > w else 0, (size - h) // 2 if size > h else 0,
                (size - w + 1) // 2 if size > w else 0, (size - h + 1) // 2 if size > h else 0]
        img = pad(img, ltrb, fill)
        w, h = img.size
        if (w, h) == (size, size):
            return img
    top = int((h - size) / 2.0)
    left = int((w - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def geometry(img, size=224, interp="bicubic", mode="shortest", fill=0):
    r = RESAMPLE[interp]
    if mode == "shortest":
        return tv_center_crop(tv_resize_shortest(img, size, r), size)
    if mode == "longest":
        return oc_center_crop_or_pad(oc_resize_keep_ratio_longest(img, size, r), size, fill)
    if mode == "squash":
        return img if img.size == (size, size) else img.resize((size, size), r)
    raise ValueError(mode)


def to_tensor_normalized(rgb):
    import torch
    t = torch.from_numpy(np.array(rgb, np.uint8, copy=True))
    t = t.view(rgb.size[1], rgb.size[0], 3).permute((2, 0, 1)).contiguous()
    t = t.to(dtype=torch.float32).div(255)
    mean = torch.as_tensor(MEAN, dtype=torch.float32)
    std = torch.as_tensor(STD, dtype=torch.float32)
    return t.sub(mean[:, None, None]).div(std[:, None, None])


def preprocess(img, **cfg):
    rgb = geometry(img, **cfg).convert("RGB")
    return rgb, to_tensor_normalized(rgb)


def pixel_bytes(img):
    if img.mode == "1":
        return (np.array(img).astype(np.uint8) * 255).tobytes()
    return img.tobytes()


# ---------------- generated test images ----------------
def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png_raw(path, arr, color_type, bit_depth, interlace=False, plte=None):
    """Minimal PNG writer for what Pillow cannot write (16-bit colour, 2/4-bit grey, Adam7)."""
    h, w = arr.shape[:2]
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = arr[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            rows = sub.astype(">u2").reshape(sub.shape[0], -1).view(np.uint8) if bit_depth == 16 \
                else sub.reshape(sub.shape[0], -1).astype(np.uint8)
            raw += b"".join(b"\x00" + rows[y].tobytes() for y in range(sub.shape[0]))
        ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1)
        extra = png_chunk(b"PLTE", plte) if plte is not None else b""
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw))
                    + png_chunk(b"IEND", b""))
        return
    if bit_depth == 16:
        rows = arr.astype(">u2").reshape(h, -1).view(np.uint8)
    elif bit_depth < 8:
        per = 8 // bit_depth
        a = arr.reshape(h, w).astype(np.uint8)
        padw = (w + per - 1) // per * per
        a = np.pad(a, ((0, 0), (0, padw - w)))
        a = a.reshape(h, padw // per, per)
        packed = np.zeros((h, padw // per), np.uint8)
        for i in range(per):
            packed |= (a[:, :, i] << (8 - bit_depth * (i + 1))).astype(np.uint8)
        rows = packed
    else:
        rows = arr.reshape(h, -1).astype(np.uint8)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
                + png_chunk(b"IEND", b""))


def smooth_noise(rng, w, h, c):
    """Natural-ish content: gradients plus noise and a few sharp edges (stresses rounding)."""
    y, x = np.mgrid[0:h, 0:w]
    base = [(x * (37 + 11 * k) / max(w, 1) + y * (53 - 7 * k) / max(h, 1)) * 255 / 90 for k in range(c)]
    a = np.stack(base, -1) + rng.normal(0, 40, (h, w, c))
    a[(x // 7 + y // 5) % 9 == 0] = 255
    a[(x // 11 + y // 3) % 13 == 0] = 0
    return np.clip(a, 0, 255).astype(np.uint8)


def generate_images(out, small=False):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1234)
    files = []

    def save(img, name, **kw):
        p = os.path.join(out, name)
        img.save(p, **kw)
        files.append(p)

    sizes = [(1, 1), (1, 300), (300, 1), (3, 5), (223, 223), (225, 224), (224, 224), (200, 150),
             (301, 224), (451, 300), (1001, 67), (1500, 1100)]
    if small:
        sizes = [(1, 1), (1, 300), (300, 1), (3, 5), (225, 224), (301, 224)]
    for (w, h) in sizes:
        rgb = smooth_noise(rng, w, h, 3)
        save(Image.fromarray(rgb, "RGB"), f"rgb_{w}x{h}.png")
    for (w, h) in ([(1, 1), (7, 300), (61, 47)] if small else [(1, 1), (7, 300), (257, 255), (640, 480)]):
        save(Image.fromarray(smooth_noise(rng, w, h, 1)[:, :, 0], "L"), f"l_{w}x{h}.png")
        a = smooth_noise(rng, w, h, 4)
        a[:, :, 3] = rng.choice([0, 0, 1, 128, 254, 255, 255, 77], size=(h, w))
        save(Image.fromarray(a, "RGBA"), f"rgba_{w}x{h}.png")
        la = Image.fromarray(a[:, :, [0, 3]].copy(), "LA")
        save(la, f"la_{w}x{h}.png")
        p = Image.fromarray(a[:, :, :3].copy(), "RGB").quantize(colors=200, method=Image.MEDIANCUT)
        save(p, f"p_{w}x{h}.png")
        save(p, f"p_{w}x{h}.gif")
        save(p, f"p_{w}x{h}.bmp")
        save(Image.fromarray(a[:, :, :3].copy(), "RGB"), f"rgb_{w}x{h}.bmp")
        save(Image.fromarray(a[:, :, 0].copy(), "L"), f"l_{w}x{h}.bmp")
        save(Image.fromarray(a[:, :, 0].copy(), "L"), f"l_{w}x{h}.gif")
        save(Image.fromarray(a, "RGBA"), f"rgba_{w}x{h}.webp", lossless=True)
        save(Image.fromarray(a[:, :, :3].copy(), "RGB"), f"rgb_{w}x{h}.webp", lossless=True)
        save(Image.fromarray(a[:, :, :3].copy(), "RGB"), f"rgb_lossy_{w}x{h}.webp", quality=80)
        save(Image.fromarray(a[:, :, :3].copy(), "RGB"), f"rgb_{w}x{h}.jpg", quality=90)
        save(Image.fromarray(a[:, :, :3].copy(), "RGB"), f"rgb444_{w}x{h}.jpg", quality=75, subsampling=0)
        save(Image.fromarray(a[:, :, :3].copy(), "RGB"), f"rgb422_{w}x{h}.jpg", quality=85, subsampling=1)
        save(Image.fromarray(a[:, :, :3].copy(), "RGB"), f"rgbprog_{w}x{h}.jpg", quality=70, progressive=True)
        save(Image.fromarray(a[:, :, 0].copy(), "L"), f"l_{w}x{h}.jpg", quality=90)
        save(Image.fromarray(a, "RGBA").convert("CMYK"), f"cmyk_{w}x{h}.jpg", quality=90)
        save(Image.fromarray(a[:, :, 0].copy(), "L").convert("1"), f"bilevel_{w}x{h}.png")
        save(Image.fromarray(a[:, :, 0].copy(), "L").convert("1"), f"bilevel_{w}x{h}.bmp")
        g16 = (smooth_noise(rng, w, h, 1)[:, :, 0].astype(np.uint16) * 257) // (1 + (w % 3) * 60)
        write_png_raw(os.path.join(out, f"gray16_{w}x{h}.png"), g16, 0, 16); files.append(os.path.join(out, f"gray16_{w}x{h}.png"))
        rgb16 = smooth_noise(rng, w, h, 3).astype(np.uint16) * 257 + rng.integers(0, 256, (h, w, 3)).astype(np.uint16)
        write_png_raw(os.path.join(out, f"rgb16_{w}x{h}.png"), rgb16, 2, 16); files.append(os.path.join(out, f"rgb16_{w}x{h}.png"))
        write_png_raw(os.path.join(out, f"rgba16_{w}x{h}.png"), np.concatenate([rgb16, a[:, :, 3:].astype(np.uint16) * 257], -1), 6, 16)
        files.append(os.path.join(out, f"rgba16_{w}x{h}.png"))
        write_png_raw(os.path.join(out, f"la16_{w}x{h}.png"), np.stack([rgb16[:, :, 0], a[:, :, 3].astype(np.uint16) * 257], -1), 4, 16)
        files.append(os.path.join(out, f"la16_{w}x{h}.png"))
        # Adam7-interlaced files (decoded by libpng, not the fast path).
        for nm, arr_, ct, bd, pl in [("rgb", a[:, :, :3], 2, 8, None), ("rgba", a, 6, 8, None),
                                     ("l", a[:, :, 0], 0, 8, None), ("gray16", g16, 0, 16, None),
                                     ("rgb16", rgb16, 2, 16, None), ("la", a[:, :, [0, 3]], 4, 8, None),
                                     ("p", a[:, :, 1] % 40, 3, 8, rng.integers(0, 256, 120, dtype=np.uint8).tobytes())]:
            fp = os.path.join(out, f"interlaced_{nm}_{w}x{h}.png")
            write_png_raw(fp, np.ascontiguousarray(arr_), ct, bd, interlace=True, plte=pl)
            files.append(fp)
        for bits in (2, 4):
            write_png_raw(os.path.join(out, f"gray{bits}_{w}x{h}.png"), rng.integers(0, 1 << bits, (h, w)), 0, bits)
            files.append(os.path.join(out, f"gray{bits}_{w}x{h}.png"))
    if small:
        return files
    # A large one for the huge-downscale case (JPEG and PNG).
    big = smooth_noise(rng, 2400, 1700, 3)
    save(Image.fromarray(big, "RGB"), "big_2400x1700.jpg", quality=85)
    save(Image.fromarray(big[:900, :1800].copy(), "RGB"), "big_1800x900.png")
    return files


def raw_cases(rng, small=False):
    """Modes no file format carries (PA, I;16) built in memory: (name, mode, image)."""
    out = []
    for (w, h) in [(5, 3), (300, 200), (97, 250)][: 2 if small else 3]:
        idx = rng.integers(0, 256, (h, w), dtype=np.uint8)
        alpha = rng.choice([0, 255, 128, 3], (h, w)).astype(np.uint8)
        pal = rng.integers(0, 256, 768, dtype=np.uint8)
        pa = Image.frombytes("PA", (w, h), np.stack([idx, alpha], -1).tobytes())
        pa.putpalette(pal.tobytes())
        out.append((f"raw_pa_{w}x{h}", pa, pal))
        p = Image.frombytes("P", (w, h), idx.tobytes())
        p.putpalette(pal.tobytes())
        out.append((f"raw_p_{w}x{h}", p, pal))
        i16 = Image.frombytes("I;16", (w, h), rng.integers(0, 400, (h, w), dtype=np.uint16).astype("<u2").tobytes())
        out.append((f"raw_i16_{w}x{h}", i16, None))
    return out


CONFIGS = [
    dict(size=224, interp="bicubic", mode="shortest", fill=0),
    dict(size=336, interp="bicubic", mode="shortest", fill=0),
    dict(size=224, interp="bilinear", mode="shortest", fill=0),
    dict(size=224, interp="nearest", mode="shortest", fill=0),
    dict(size=224, interp="bicubic", mode="longest", fill=0),
    dict(size=97, interp="bicubic", mode="longest", fill=17),
    dict(size=224, interp="bicubic", mode="squash", fill=0),
    dict(size=7, interp="bicubic", mode="shortest", fill=0),
]


def cmd_goldens(args):
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    files = generate_images(os.path.join(out, "images"), small=args.small)
    photos = [] if args.small else sorted(p for p in glob.glob(os.path.join(args.shared, "sample_photos", "*", "*"))
                                          if p.endswith((".png", ".jpg")))
    cases = []

    def add(name, img, source, all_configs, raw=None):
        img.load()
        entry = {"name": name, "source": source, "mode": img.mode, "width": img.width, "height": img.height,
                 "outputs": []}
        with open(os.path.join(out, name + ".decoded"), "wb") as f:
            f.write(pixel_bytes(img))
        entry["decoded"] = name + ".decoded"
        if raw is not None:
            entry["raw_palette"] = name + ".pal"
            with open(os.path.join(out, name + ".pal"), "wb") as f:
                f.write(raw.tobytes())
        try:
            if img.mode == "RGB":  # identical to .decoded: not written again
                entry["decrgb"] = True
            else:
                with open(os.path.join(out, name + ".decrgb"), "wb") as f:
                    f.write(img.convert("RGB").tobytes())
                entry["decrgb"] = True
        except Exception:
            entry["decrgb"] = False
        for k, cfg in enumerate(CONFIGS if all_configs else CONFIGS[:1]):
            try:
                rgb, t = preprocess(img, **cfg)
            except Exception as e:  # e.g. Pillow cannot resample I;16 with a filter
                entry["outputs"].append({"config": cfg, "error": str(e)})
                continue
            base = f"{name}.c{k}"
            with open(os.path.join(out, base + ".rgb8"), "wb") as f:
                f.write(rgb.tobytes())
            o = {"config": cfg, "rgb8": base + ".rgb8"}
            if k == 0:  # the normalised tensor once per image (the others differ only in geometry)
                np.save(os.path.join(out, base + ".npy"), t.numpy().astype(np.float32))
                o["npy"] = base + ".npy"
            entry["outputs"].append(o)
        cases.append(entry)

    for p in files:
        name = "gen_" + os.path.basename(p).replace(".", "_")
        big = "big_" in p or "1500x1100" in p
        add(name, Image.open(p), os.path.relpath(p, out), all_configs=not big)
    for p in photos:
        name = "photo_" + os.path.basename(p).replace(".", "_")
        add(name, Image.open(p), p, all_configs=True)
    rng = np.random.default_rng(99)
    for name, img, pal in raw_cases(rng, args.small):
        add(name, img, "raw", all_configs=True, raw=pal)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"pillow": Image.__version__, "cases": cases}, f, indent=1)
    print(f"wrote {len(cases)} cases to {out}")


# ---------------- small committed samples (unit tests, fuzz seeds) ----------------
def cmd_samples(args):
    """Tiny files of every format for tests/data/vision and the fuzz seeds (a few KB in all)."""
    out = args.out
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    a = smooth_noise(rng, 16, 12, 4)
    rgb = Image.fromarray(a[:, :, :3].copy(), "RGB")
    rgb.save(os.path.join(out, "tiny_rgb.png"))
    Image.fromarray(a, "RGBA").save(os.path.join(out, "tiny_rgba.png"))
    rgb.quantize(colors=16).save(os.path.join(out, "tiny_p.png"))
    Image.fromarray(a[:, :, [0, 3]].copy(), "LA").save(os.path.join(out, "tiny_la.png"))
    write_png_raw(os.path.join(out, "tiny_gray16.png"), a[:, :, 0].astype(np.uint16) * 3, 0, 16)
    rgb.save(os.path.join(out, "tiny_rgb.jpg"), quality=90)
    rgb.save(os.path.join(out, "tiny_prog.jpg"), quality=80, progressive=True)
    Image.fromarray(a[:, :, 0].copy(), "L").save(os.path.join(out, "tiny_l.jpg"), quality=90)
    rgb.quantize(colors=16).save(os.path.join(out, "tiny_p.gif"))
    rgb.save(os.path.join(out, "tiny_rgb.bmp"))
    rgb.quantize(colors=16).save(os.path.join(out, "tiny_p.bmp"))
    Image.fromarray(a, "RGBA").save(os.path.join(out, "tiny_rgba.webp"), lossless=True)
    rgb.save(os.path.join(out, "tiny_rgb_lossy.webp"), quality=80)
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(os.path.join(out, "tiny_orient6.jpg"), quality=95, exif=exif.tobytes())
    print("wrote samples to", out)


def cmd_large(args):
    """Large JPEGs for the fast-path measurement: the sample photos upscaled 4x (Lanczos), q90.
    (No photo in ../shared/data is larger than 741 px, where scaled decoding cannot help.)"""
    os.makedirs(args.out, exist_ok=True)
    photos = sorted(p for p in glob.glob(os.path.join(args.shared, "sample_photos", "*", "*"))
                    if p.endswith((".png", ".jpg")))
    for p in photos:
        im = Image.open(p).convert("RGB")
        im = im.resize((im.width * 4, im.height * 4), Image.LANCZOS)
        im.save(os.path.join(args.out, os.path.splitext(os.path.basename(p))[0] + "_x4.jpg"), quality=90)
    print("wrote", len(photos), "large JPEGs to", args.out)


# ---------------- timing ----------------
def _work(paths, draft=False):
    n = 0
    for p in paths:
        img = Image.open(p)
        if draft:  # Pillow's own scaled JPEG decoding (what the fast path does in clip)
            img.draft("RGB", (224, 224))
        rgb, t = preprocess(img)
        n += 1
    return n


def _work_draft(paths):
    return _work(paths, True)


def cmd_bench(args):
    import multiprocessing as mp
    import torch
    torch.set_num_threads(1)
    sets = {
        "sample_photos": sorted(p for p in glob.glob(os.path.join(args.shared, "sample_photos", "*", "*"))
                                if p.endswith((".png", ".jpg"))),
        "cifar10_test_jpeg": sorted(glob.glob(os.path.join(args.shared, "cifar10_jpeg", "test", "*", "*.jpg"))),
    }
    if args.large:
        sets["large_jpeg"] = sorted(glob.glob(os.path.join(args.large, "*.jpg")))
        sets["large_jpeg_draft"] = sets["large_jpeg"]
    for name, paths in sets.items():
        if args.only and name not in args.only:
            continue
        fn = _work_draft if name.endswith("_draft") else _work
        reps = max(1, args.reps if name == "sample_photos" else 1)
        work = paths * reps
        for threads in args.threads:
            chunks = [work[i::threads] for i in range(threads)]
            t0 = time.perf_counter()
            c0 = time.process_time()
            if threads == 1:
                n = fn(work)
            else:
                with mp.get_context("fork").Pool(threads) as pool:
                    t0 = time.perf_counter()
                    n = sum(pool.map(fn, chunks))
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
            cpu_note = f" cpu_seconds={cpu:.3f} images_per_cpu_s={n / cpu:.1f}" if threads == 1 else ""
            print(f"pillow {name} processes={threads} images={n} seconds={dt:.3f} images_per_s={n / dt:.1f}{cpu_note}")
            sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    here = os.path.dirname(os.path.abspath(__file__))
    default_shared = os.path.join(here, "..", "..", "shared", "data")
    g = sub.add_parser("goldens")
    g.add_argument("out")
    g.add_argument("--shared", default=default_shared)
    g.add_argument("--small", action="store_true", help="only small generated cases (for the sanitizer run)")
    sm = sub.add_parser("samples")
    sm.add_argument("out")
    lg = sub.add_parser("large")
    lg.add_argument("out")
    lg.add_argument("--shared", default=default_shared)
    b = sub.add_parser("bench")
    b.add_argument("--shared", default=default_shared)
    b.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    b.add_argument("--reps", type=int, default=20, help="passes over the sample photos")
    b.add_argument("--large", default=None, help="folder from the 'large' command (adds large JPEGs)")
    b.add_argument("--only", nargs="*", default=None, help="subset of: sample_photos cifar10_test_jpeg large_jpeg large_jpeg_draft")
    args = ap.parse_args()
    {"goldens": cmd_goldens, "bench": cmd_bench, "samples": cmd_samples, "large": cmd_large}[args.cmd](args)


if __name__ == "__main__":
    main()
