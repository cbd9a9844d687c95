"""Feature maps read at input pixels, and the identities that let encoders skip assembling hypercolumns.

A hypercolumn is every tap's map upsampled (bilinear) to the input size and read at one pixel. That
reading is linear in the map, so a linear map of the channels can be applied to the map at its own
resolution and interpolated after, and a sum of hypercolumns over pixels is a weighted sum of map
cells. :class:`StoredTaps` uses both, which is what makes VLAD of the deep taps cheap.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .shards import bilinear_corners


def sample_feature_maps(fmap: torch.Tensor, coords: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear values of (B, C, h, w) maps at (B, P, 2) input-pixel (row, col) coords -> (B, P, C).

    A pixel centre maps to the normalised coordinate grid_sample uses with align_corners=False,
    and border padding reproduces interpolate()'s clamping at the edges, so this equals
    upsampling the map to size x size (bilinear, align_corners=False) and indexing it. A map at
    full resolution needs no interpolation: its values are gathered directly.
    """
    b, c, h, w = fmap.shape
    rc = coords.to(device=fmap.device)
    if h == size and w == size:
        rows = fmap.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view when fmap is channels_last
        flat = (torch.arange(b, device=fmap.device) * (h * w)).unsqueeze(1) + rc[..., 0].long() * w + rc[..., 1].long()
        return rows.index_select(0, flat.reshape(-1)).to(torch.float32).view(b, -1, c)
    rc = rc.to(torch.float32)
    grid = torch.stack([(rc[..., 1] + 0.5) / size * 2 - 1, (rc[..., 0] + 0.5) / size * 2 - 1], -1)
    out = F.grid_sample(fmap.to(torch.float32), grid.unsqueeze(1), mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out[:, :, 0, :].transpose(1, 2)


class StoredTaps:
    """A batch of entries as a shard stores them: per tap its columns at the sampled pixels (B, P, C) or
    its whole feature map (B, side, side, C), with the pixels' (row, col) coordinates (B, P, 2).

    ``at_pixels`` gives hypercolumns times a matrix, ``sum_over`` sums of hypercolumns over groups of
    pixels: both equal assembling the hypercolumns first (tested), at a fraction of the cost.
    """

    def __init__(self, taps: list[torch.Tensor], coords: np.ndarray, image_size: int):
        self.taps, self.coords, self.image_size = taps, coords, image_size
        self.widths = [t.shape[-1] for t in taps]
        self._coords_tensor = torch.from_numpy(np.ascontiguousarray(coords)).to(taps[0].device)
        self._corners = {}  # side -> (cells, weights) (B, P, 4) each, made when first needed

    def split(self, matrix: torch.Tensor) -> list[torch.Tensor]:
        """A (D, m) matrix as its row blocks, one per tap."""
        return list(torch.split(matrix, self.widths, 0))

    def at_pixels(self, matrices: list[torch.Tensor]) -> torch.Tensor:
        """(B, P, m): the hypercolumns times a (D, m) matrix given as its per-tap row blocks `matrices`."""
        total = None
        for tap, matrix in zip(self.taps, matrices):
            if tap.ndim == 3:
                part = tap @ matrix
            else:  # the map times the matrix at its own resolution, then read at the pixels
                part = sample_feature_maps((tap @ matrix).permute(0, 3, 1, 2), self._coords_tensor, self.image_size)
            total = part if total is None else total + part
        return total

    def sum_over(self, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
        """(B, n_groups, D): per entry, the sum of the hypercolumns of its pixels in each group ((B, P) ints)."""
        parts = []
        for tap in self.taps:
            b = tap.shape[0]
            rows = groups + n_groups * torch.arange(b, device=tap.device).unsqueeze(1)  # (entry, group) row
            if tap.ndim == 3:
                sums = torch.zeros(b * n_groups, tap.shape[-1], dtype=tap.dtype, device=tap.device)
                parts.append(sums.index_add_(0, rows.reshape(-1), tap.reshape(-1, tap.shape[-1])).view(b, n_groups, -1))
                continue
            side = tap.shape[1]
            cells, weights = self._cell_weights(side)
            # Each pixel's four cell weights, added to its group's row: a (B, n_groups, side^2) mixing matrix.
            mixing = torch.zeros(b * n_groups * side * side, dtype=tap.dtype, device=tap.device)
            mixing.index_add_(0, (rows.unsqueeze(-1) * side * side + cells).reshape(-1), weights.reshape(-1))
            parts.append(torch.bmm(mixing.view(b, n_groups, side * side), tap.reshape(b, side * side, -1)))
        return torch.cat(parts, -1)

    def _cell_weights(self, side: int):
        if side not in self._corners:
            cells, weights = bilinear_corners(self.coords, side, self.image_size)
            device = self.taps[0].device
            self._corners[side] = (torch.from_numpy(cells).to(device), torch.from_numpy(weights).to(device))
        return self._corners[side]
