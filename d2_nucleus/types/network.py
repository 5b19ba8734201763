# -*- coding: utf-8 -*-
"""
The type classifier's network (torch) and its training.

* a small convolutional branch on image patches around the nucleus (feature kind ``"patch"``,
  :mod:`.patches`): blocks of two 3 x 3 convolutions (batch norm, ReLU) and a 2 x 2 max-pool,
  ``TYPES.PATCH_CHANNELS`` channels, then global average pooling;
* the standardised feature vector (box / context features, measurements);
* their concatenation through one hidden layer (``TYPES.HIDDEN_DIM``; 0: linear, i.e.
  multinomial logistic regression on the features) to the class logits.

Trained with AdamW (one-cycle learning rate), a class-balanced cross-entropy, patches flipped and
rotated by multiples of 90 degrees (tissue has no orientation). For the file, each batch norm is
folded into its convolution: the classifier is then plain arrays (:mod:`.classifier`), and its
patch branch runs with :func:`patch_embedding`.
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["PATCHES_PER_BLOCK", "patch_embedding", "train_network"]

#: Convolutions per block of the patch branch (a 2 x 2 max-pool after each block).
PATCHES_PER_BLOCK = 2


def _build(feature_dim: int, num_classes: int, hidden: int, dropout: float, channels: Sequence[int]):
    import torch
    from torch import nn

    class TypeNet(nn.Module):
        def __init__(self):
            super().__init__()
            layers, prev = [], 3
            for c in channels:
                for _ in range(PATCHES_PER_BLOCK):
                    layers += [nn.Conv2d(prev, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()]
                    prev = c
                layers.append(nn.MaxPool2d(2))
            self.patch = nn.Sequential(*layers) if channels else None
            width = (prev if channels else 0) + feature_dim
            if hidden > 0:
                self.head = nn.Sequential(nn.Dropout(dropout if channels else 0.0), nn.Linear(width, hidden), nn.ReLU(),
                                          nn.Dropout(dropout), nn.Linear(hidden, num_classes))
            else:
                self.head = nn.Sequential(nn.Dropout(dropout if channels else 0.0), nn.Linear(width, num_classes))

        def forward(self, x, patches=None):
            parts = []
            if self.patch is not None:
                parts.append(self.patch(patches).mean(dim=(2, 3)))
            if x.shape[1]:
                parts.append(x)
            return self.head(torch.cat(parts, dim=1))

    return TypeNet()


def _fold(net) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], List[Tuple[np.ndarray, np.ndarray]]]:
    """(convolutions with their batch norms folded in, linear layers) as float32 arrays."""
    from torch import nn

    convs = []
    if net.patch is not None:
        modules = list(net.patch)
        for i, m in enumerate(modules):
            if isinstance(m, nn.Conv2d):
                bn = modules[i + 1]
                scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach()
                w = m.weight.detach() * scale[:, None, None, None]
                b = (m.bias.detach() - bn.running_mean) * scale + bn.bias.detach()
                convs.append((w.numpy().astype(np.float32), b.numpy().astype(np.float32)))
    linears = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
               for m in net.head if isinstance(m, nn.Linear)]
    return convs, linears


def patch_tensor(patches: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """uint8 (N, P, P, 3) patches -> normalised float32 (N, 3, P, P) tensor."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)) / \
        torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1)


def patch_embedding(convs: Sequence[Tuple[np.ndarray, np.ndarray]], patches: np.ndarray, mean: np.ndarray,
                    std: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The patch branch of a folded classifier: (N, C) globally pooled features of uint8 patches."""
    import torch
    import torch.nn.functional as F

    weights = [(torch.from_numpy(np.asarray(w, np.float32)), torch.from_numpy(np.asarray(b, np.float32)))
               for w, b in convs]
    out = []
    with torch.no_grad():
        for i in range(0, len(patches), chunk):
            x = patch_tensor(patches[i : i + chunk], mean, std)
            for k, (w, b) in enumerate(weights):
                x = F.relu(F.conv2d(x, w, b, padding=1))
                if (k + 1) % PATCHES_PER_BLOCK == 0:
                    x = F.max_pool2d(x, 2)
            out.append(x.mean(dim=(2, 3)).numpy())
    width = weights[-1][0].shape[0] if weights else 0
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, width))


def train_network(z: np.ndarray, y: np.ndarray, num_classes: int, patches: Optional[np.ndarray] = None,
                  patch_mean=None, patch_std=None, channels: Sequence[int] = (), hidden: int = 256,
                  epochs: int = 60, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-2,
                  dropout: float = 0.2, seed: int = 0, progress: bool = False):
    """
    Train on standardised features ``z`` (N, D; D may be 0) and, with ``channels``, uint8 image
    ``patches`` (N, P, P, 3); labels ``y``. Returns (folded convolutions, linear layers).
    """
    import torch
    from torch import nn
    from tqdm import tqdm

    torch.manual_seed(int(seed))
    gen = torch.Generator().manual_seed(int(seed))
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    use_patches = bool(channels)
    net = _build(z.shape[1], num_classes, hidden, dropout, channels if use_patches else ())
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, epochs * ((len(y) + batch_size - 1) // batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))
    zt, yt = torch.from_numpy(np.asarray(z, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    net.train()
    for _ in tqdm(range(epochs), desc="train types", unit="epoch", disable=not progress):
        order = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            p = None
            if use_patches:
                p = patch_tensor(patches[idx.numpy()], patch_mean, patch_std)
                k = int(torch.randint(4, (1,), generator=gen))
                p = torch.rot90(p, k, (2, 3))
                if bool(torch.randint(2, (1,), generator=gen)):
                    p = p.flip(3)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(zt[idx], p), yt[idx]).backward()
            optimizer.step()
            schedule.step()
    net.eval()
    return _fold(net)
