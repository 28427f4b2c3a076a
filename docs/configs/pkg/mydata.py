import torch
from torch.utils.data import Dataset


class Blobs(Dataset):
    """Gaussian blobs: (x, y) tuples, x a (2,) float32 tensor, y an int in [0, classes)."""

    def __init__(self, n: int = 300, classes: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(0, classes, (n,), generator=g).tolist()
        centers = torch.randn(classes, 2, generator=g) * 4
        self.x = centers[self.targets] + torch.randn(n, 2, generator=g)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i], self.targets[i]
