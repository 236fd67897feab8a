"""Batch augmentation on the device: crop + flip (:mod:`vit16.data.crop`),
AutoAugment-style policies, normalisation, random erasing and MixUp/CutMix.

Every random choice is drawn on the CPU from an explicit ``torch.Generator``
(or a numpy ``Generator`` derived from it), per sample where the method is
per sample, and applied to the whole batch on its device with vectorised
ops, so results do not depend on the device and the global RNG is untouched.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from vit16.config_checks import AUTO_AUGMENT_POLICIES as POLICIES
from vit16.data.crop import CropSource, crop_flip, draw_crop_flip
from vit16.data.policy_ops import apply_plan, to_device
from vit16.data.policy_plan import BatchPlan, plan
from vit16.data.policy_space import AUTOAUGMENT_POLICIES, RANDAUGMENT_SPACE, TRIVIALAUGMENT_SPACE, draw


def upsample(images: torch.Tensor, size: int, kernel: str | None = None) -> torch.Tensor:
    """uint8 (B, C, h, w) -> uint8 (B, C, size, size): bicubic with
    ``antialias=True`` (PIL's a = -0.5 kernel, as torchvision's
    ``v2.Resize(size, BICUBIC, antialias=True)``; within one grey level of it).

    ``kernel``: "uint8" runs torch's uint8 kernel on a channels-last copy
    (about 20x the float kernel's images/s on one CPU core; CPU only) and
    returns its channels-last result as it is (:func:`normalize` reads any
    layout; a contiguous copy would cost more than the resize), "float"
    the float kernel, rounded and clamped to uint8 (CUDA has no uint8 bicubic);
    default "uint8" on the CPU, else "float". The two agree within one grey level.
    """
    kernel = kernel or ("uint8" if images.device.type == "cpu" else "float")
    if kernel == "uint8":
        return F.interpolate(images.contiguous(memory_format=torch.channels_last), size=(size, size),
                             mode="bicubic", antialias=True)
    x = F.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True)
    return x.clamp_(0, 255).round_().to(torch.uint8)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255], any memory layout -> contiguous float32
    ``(x / 255 - mean) / std``, same device."""
    return normalize_with(images, normalize_constants(mean, std, images.device))


def normalize_with(images: torch.Tensor, constants: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """:func:`normalize` with the constants of :func:`normalize_constants`
    built once: one new contiguous float32 tensor, the rest in place."""
    x = torch.empty(images.shape, device=images.device).copy_(images)
    return x.sub_(constants[0]).div_(constants[1])


def normalize_constants(mean: Sequence[float], std: Sequence[float], device) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (1, C, 1, 1) ``255 * mean`` and ``255 * std`` on ``device``, as :func:`normalize` uses."""
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0
    return m, s


def random_erasing(x: torch.Tensor, p: float, gen: torch.Generator, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), attempts: int = 10, inplace: bool = False) -> torch.Tensor:
    """Per-sample random erasing (Zhong et al. 2020), torchvision ``RandomErasing``'s
    sampling (area ``scale``, log-uniform aspect ``ratio``, up to ``attempts``
    tries, value 0 = the mean after normalisation), vectorised over the batch.

    Args:
        x: float (B, C, H, W), normalised.
        p: probability that a sample gets one erased rectangle.
        inplace: erase in ``x`` itself (the caller owns it) instead of a copy.

    Returns:
        a new tensor like ``x`` (``x`` itself when ``inplace``).
    """
    if p <= 0:
        return x
    return erase(x, draw_erasing(x.shape[0], x.shape[2], x.shape[3], p, gen, scale, ratio, attempts), inplace)


def draw_erasing(b: int, h: int, w: int, p: float, gen: torch.Generator, scale: tuple[float, float] = (0.02, 0.33),
                 ratio: tuple[float, float] = (0.3, 3.3), attempts: int = 10) -> torch.Tensor:
    """The draws of :func:`random_erasing` for ``b`` images of ``h`` x ``w``:
    int64 (5, B) rows top, bottom, left, right, erased (0 / 1)."""
    apply = torch.rand(b, generator=gen) < p
    area = h * w * torch.empty(b, attempts).uniform_(scale[0], scale[1], generator=gen)
    aspect = torch.exp(torch.empty(b, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen))
    eh = torch.round(torch.sqrt(area * aspect)).long()
    ew = torch.round(torch.sqrt(area / aspect)).long()
    ok = (eh < h) & (ew < w)
    first = ok.int().argmax(1, keepdim=True)
    eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
    u = torch.rand(b, 2, generator=gen)
    top = (u[:, 0] * (h - eh + 1)).long()
    left = (u[:, 1] * (w - ew + 1)).long()
    apply &= ok.any(1)
    return torch.stack([top, top + eh, left, left + ew, apply.long()])


def erase(x: torch.Tensor, box: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Zero each sample's rectangle of ``box`` int64 (5, B) (:func:`draw_erasing`;
    on any device: only it travels, the mask is built on ``x``'s) in float
    (B, C, H, W) ``x``: a new tensor, or ``x`` itself when ``inplace``."""
    h, w = x.shape[2:]
    top, bottom, left, right, apply = box if box.device == x.device else to_device(box, x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = ((rows >= top[:, None]) & (rows < bottom[:, None]) & apply.bool()[:, None]).to(x.dtype)
    in_cols = ((cols >= left[:, None]) & (cols < right[:, None])).to(x.dtype)
    # (B, 1, H, W) of 0 / 1 as 1 - an outer product, one float op: several times
    # faster on a CPU than the same mask built with boolean ops, or a masked_fill
    keep = torch.addcmul(x.new_ones(()), in_rows[:, None, :, None], in_cols[:, None, None, :], value=-1)
    return x.mul_(keep) if inplace else x * keep


def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """timm's CutMix box for mixing ratio ``lam``: side ratio ``sqrt(1 - lam)``,
    uniform centre, clipped to the image. Returns (top, bottom, left, right)."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    top, bottom = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
    left, right = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
    return int(top), int(bottom), int(left), int(right)


def mix_batch(x: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup_alpha: float,
              cutmix_alpha: float, mix_prob: float, rng: np.random.Generator,
              inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MixUp / CutMix of the batch with its reverse, as timm's ``Mixup`` in batch mode.

    With probability ``mix_prob`` the batch is mixed: CutMix if only
    ``cutmix_alpha > 0``, MixUp if only ``mixup_alpha > 0``, one of them with
    p = 0.5 if both; ``lam ~ Beta(alpha, alpha)`` (for CutMix corrected to
    the pasted area). Sample ``i`` is mixed with sample ``B - 1 - i``.

    Args:
        x: float (B, C, H, W).
        labels: int64 (B,).
        inplace: CutMix pastes into ``x`` itself (the caller owns it) instead of a copy.

    Returns:
        (mixed x, soft targets float32 (B, num_classes) = ``lam * onehot(y) +
        (1 - lam) * onehot(y.flip(0))``, lam); an unmixed batch has lam = 1.
    """
    onehot = torch.zeros(labels.shape[0], num_classes, device=labels.device).scatter_(1, labels[:, None], 1.0)
    lam = 1.0
    if (mixup_alpha > 0 or cutmix_alpha > 0) and rng.random() < mix_prob:
        use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
        if use_cutmix:
            lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
            top, bottom, left, right = cutmix_box(x.shape[2], x.shape[3], lam, rng)
            box = x[:, :, top:bottom, left:right].flip(0)  # only the box is flipped
            x = x if inplace else x.clone()
            x[:, :, top:bottom, left:right] = box
            lam = 1.0 - (bottom - top) * (right - left) / (x.shape[2] * x.shape[3])
        else:
            lam = float(rng.beta(mixup_alpha, mixup_alpha))
            x = x.flip(0).lerp_(x, lam)  # = x * lam + x.flip(0) * (1 - lam): one copy, one in-place pass
    return x, onehot * lam + onehot.flip(0) * (1.0 - lam), lam


class BatchPolicy:
    """An AutoAugment-style policy applied per sample to a uint8 batch.

    Each sample draws its own ops (the distribution of the published policy,
    :mod:`vit16.data.policy_space`), drawn on the CPU from the generator given.

    Every op is applied to the whole batch at once with per-sample parameters
    (:mod:`vit16.data.policy_ops`): no loop over the batch content, and the
    parameters reach the device in one copy. (The previous implementation,
    which grouped samples by (op, magnitude) and called torchvision's private
    op code, was measured side by side in results/BENCH_CPU.md and removed.)

    Args:
        name: "randaugment" (2 ops, magnitude 9 of 31), "autoaugment" (the
            learned policy ``autoaugment_policy``) or "trivialaugment" (wide).
        autoaugment_policy: "cifar10" or "imagenet" (the data set's
            :attr:`~vit16.data.sources.Source.autoaugment_policy`).

    Raises:
        ValueError: unknown ``name`` or ``autoaugment_policy``.
    """

    def __init__(self, name: str, autoaugment_policy: str = "cifar10"):
        if name == "randaugment":
            self.transform = v2.RandAugment()
            self.ops = tuple(RANDAUGMENT_SPACE)
        elif name == "autoaugment":
            if autoaugment_policy not in AUTOAUGMENT_POLICIES:
                raise ValueError(f"autoaugment_policy = {autoaugment_policy!r}; expected one of "
                                 f"{', '.join(AUTOAUGMENT_POLICIES)}")
            self.transform = v2.AutoAugment(v2.AutoAugmentPolicy(autoaugment_policy))
            self.ops = tuple(dict.fromkeys(op for sub in AUTOAUGMENT_POLICIES[autoaugment_policy]
                                           for op, _, _ in sub))
        elif name == "trivialaugment":
            self.transform = v2.TrivialAugmentWide()
            self.ops = tuple(TRIVIALAUGMENT_SPACE)
        else:
            raise ValueError(f"auto_augment = {name!r}; expected '' or one of {', '.join(POLICIES)}")
        self.name = name
        self.autoaugment_policy = autoaugment_policy

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> augmented uint8 (B, 3, H, W), per-sample ops drawn from ``gen``."""
        host = self.plan(images.shape[0], images.shape[2], images.shape[3], gen)
        return self.apply(images, host, to_device(host.packed, images.device))

    def plan(self, n: int, h: int, w: int, gen: torch.Generator) -> BatchPlan:
        """Draw the ops of ``n`` images of ``h`` x ``w`` from ``gen``: the host
        plan (:class:`~vit16.data.policy_plan.BatchPlan`)."""
        return plan(draw(self.name, self.autoaugment_policy, n, h, w, gen), h, w)

    def apply(self, images: torch.Tensor, host: BatchPlan, packed: torch.Tensor) -> torch.Tensor:
        """Apply :meth:`plan`'s ``host`` to uint8 (B, 3, H, W); ``packed``: its
        ``packed`` tensor on the images' device."""
        return apply_plan(images, host, packed, self.ops)


class BatchAugment:
    """The device-side training pipeline for one micro-batch.

    ``geometric`` (crop + flip + policy, on uint8) is used by the
    device-resident path; the worker path does those per sample in its
    DataLoader workers and only runs normalisation, erasing and mixing here.

    With ``out_size`` (CIFAR at 224 or 384 on the device) crop + flip and the
    policy run at the stored resolution, where the information is, and the
    batch is then upsampled (:func:`upsample`) to ``out_size``; random erasing
    and MixUp/CutMix run at ``out_size``. ``crop_padding`` is then in stored
    pixels (the table's ``crop_padding`` at ``out_size``, scaled: 28 at 224 is
    4 at 32).

    Args:
        cfg: the :class:`~vit16.config.DataConfig`.
        mean, std: per-channel statistics in [0, 1].
        num_classes: for soft targets.
        geometric: run crop + flip + policy here.
        autoaugment_policy: see :class:`BatchPolicy`.
        out_size: upsample to this size after the geometric part (``None``: no resize).
        crop_padding: the crop's zero padding in pixels of the input images
            (default ``cfg.crop_padding``).
    """

    def __init__(self, cfg, mean, std, num_classes: int, geometric: bool, autoaugment_policy: str,
                 out_size: int | None = None, crop_padding: int | None = None):
        self.cfg = cfg
        self.out_size = out_size
        self.crop_padding = cfg.crop_padding if crop_padding is None else crop_padding
        self.mean, self.std = tuple(mean), tuple(std)
        self.num_classes = num_classes
        self.geometric = geometric
        self.policy = BatchPolicy(cfg.auto_augment, autoaugment_policy) if geometric and cfg.auto_augment else None
        self.mixing = cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0
        self.constants: tuple[torch.Tensor, torch.Tensor] | None = None  # built once on the device

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 3, H, W) and int64 (B,) on the device -> (float32 (B, 3, H, W)
        normalised, targets int64 (B,) or float32 (B, num_classes) when mixing).

        Every random number is drawn from ``gen`` on the CPU first, in the
        pipeline's order (crop + flip, policy, erasing, mixing), and the
        per-sample parameters reach the device in one copy."""
        b, _, h, w = images.shape
        return self.run(images, labels, *self.draw(b, h, w, gen, images.device))

    def crop_source(self, images: torch.Tensor) -> CropSource | None:
        """The :class:`CropSource` of a resident uint8 set (N, 3, H, W) for
        :meth:`from_source`; ``None`` when this augmentation neither crops nor
        flips on the device (then gather and call it instead)."""
        if not self.geometric or (self.crop_padding == 0 and not self.cfg.hflip):
            return None
        return CropSource(images, self.crop_padding, mirror=self.cfg.hflip)

    def from_source(self, source: CropSource, idx: torch.Tensor, labels: torch.Tensor,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``self(source.images[idx], labels, gen)``, bit for bit, with the crops
        read straight from ``source`` (:meth:`crop_source`): no gather, pad or
        flip per micro-batch. ``idx``: int64 (B,) on the source's device."""
        _, h, w = source.shape
        return self.run(None, labels, *self.draw(idx.shape[0], h, w, gen, idx.device), source=(source, idx))

    def draw(self, b: int, h: int, w: int, gen: torch.Generator, device) -> tuple:
        """Every random number of a micro-batch of ``b`` images of ``h`` x ``w``,
        from ``gen`` in the pipeline's order: (``packed`` float32 on ``device``,
        one copy: crop + flip (B, 3), the policy's packed plan, erasing boxes
        (5, B), each if used; ``host``, the policy's plan; ``seed``, mixing's)."""
        cfg = self.cfg
        parts, host = [], None
        if self.geometric:
            offsets, flips = draw_crop_flip(b, self.crop_padding, cfg.hflip, gen)
            parts.append(torch.cat([offsets, flips[:, None].long()], 1).flatten().float())
            if self.policy is not None:
                host = self.policy.plan(b, h, w, gen)
                if isinstance(host, BatchPlan):
                    parts.append(host.packed)
        if cfg.random_erasing > 0:
            size = (self.out_size, self.out_size) if self.out_size else (h, w)
            parts.append(draw_erasing(b, *size, cfg.random_erasing, gen).flatten().float())
        seed = int(torch.randint(0, 2**62, (1,), generator=gen)) if self.mixing else 0
        packed = to_device(torch.cat(parts), device) if parts else None  # the one copy
        return packed, host, seed

    def run(self, images: torch.Tensor | None, labels: torch.Tensor, packed: torch.Tensor | None, host, seed: int,
            source: tuple[CropSource, torch.Tensor] | None = None):
        """The device part of :meth:`__call__` on what :meth:`draw` returned;
        with ``source`` = (a :class:`CropSource`, indices int64 (B,)) the crops
        come from it and ``images`` is not read."""
        cfg = self.cfg
        b, start = labels.shape[0], 0
        if self.geometric:
            crop = packed[:3 * b].view(b, 3).long()
            start = 3 * b
            if source is not None:
                images = source[0].crops(source[1], crop[:, :2], crop[:, 2].bool())
            elif self.crop_padding > 0 or cfg.hflip:
                images = crop_flip(images, crop[:, :2], crop[:, 2].bool(), self.crop_padding)
            if self.policy is not None:
                size = host.packed.numel() if isinstance(host, BatchPlan) else 0
                images = self.policy.apply(images, host, packed[start:start + size])
                start += size
        if self.out_size:
            images = upsample(images, self.out_size)
        if self.constants is None or self.constants[0].device != images.device:
            self.constants = normalize_constants(self.mean, self.std, images.device)
        x = normalize_with(images, self.constants)
        if cfg.random_erasing > 0:
            x = erase(x, packed[start:start + 5 * b].view(5, b).long(), inplace=True)  # x is ours
        if not self.mixing:
            return x, labels
        x, targets, _ = mix_batch(x, labels, self.num_classes, cfg.mixup_alpha, cfg.cutmix_alpha,
                                  cfg.mix_prob, np.random.default_rng(seed), inplace=True)
        return x, targets
