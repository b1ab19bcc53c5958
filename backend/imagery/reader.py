"""Windowed reads of a scene onto its 10 m reference grid.

Bands stored at their native resolution (20 m, 60 m) are resampled onto the 10 m grid through a
``WarpedVRT`` per file, so only the pixels a window needs are read and warped; files already on the
reference grid are read directly. Windows that extend past the scene are filled with nodata.

Resampling is nearest neighbour by default: SSL4EO-S12 (SoftCon's pretraining data) was exported
from Earth Engine at 10 m, whose default resampling is nearest, so this reproduces the pretraining
input. ``bilinear`` is available for other weights.

L2A input has no B10 (cirrus): when a model asks for B10 the reader fills it with a constant the
caller supplies, normally the band's training mean, so after normalisation B10 sits at the centre
of its range and carries no signal (see :func:`backend.imagery.normalization.neutral_value`).

Sentinel-1 backscatter stored as linear power (``units="linear"``) is converted to dB
(``10·log10``) as it is read, so the ``*-s1`` models always see dB; NaN pixels are nodata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from backend.errors import BandMismatchError, RasterReadError
from backend.imagery.bands import require_bands
from backend.imagery.sources import BandAsset, SceneSource

ResamplingName = Literal["nearest", "bilinear"]


@dataclass(frozen=True)
class PixelWindow:
    """A window on the 10 m reference grid (may extend past the scene edges)."""

    col_off: int
    row_off: int
    width: int
    height: int

    def clipped(self, width: int, height: int) -> PixelWindow | None:
        """The part of the window inside a ``width``×``height`` grid, or None if disjoint."""
        c0, r0 = max(self.col_off, 0), max(self.row_off, 0)
        c1, r1 = min(self.col_off + self.width, width), min(self.row_off + self.height, height)
        if c1 <= c0 or r1 <= r0:
            return None
        return PixelWindow(c0, r0, c1 - c0, r1 - r0)

    def as_rasterio(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)


class SceneReader:
    """Reads band stacks from one scene; holds its open datasets until :meth:`close`.

    Not thread-safe (GDAL datasets are not): use one reader per thread.
    """

    def __init__(self, source: SceneSource, *, resampling: ResamplingName = "nearest") -> None:
        self.source = source
        self.resampling = resampling
        self._stack = ExitStack()
        self._datasets: dict[tuple[str, str], rasterio.io.DatasetReaderBase] = {}
        self._band_slot = {b.name: (b.file, b.index) for b in source.bands}

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        self._datasets.clear()

    def settings(self) -> dict[str, object]:
        """Reader settings that change the pixels (hashed into the cache key)."""
        return {"resampling": self.resampling, "dn_offset": self.source.dn_offset}

    def _dataset(
        self, file: str, resampling: ResamplingName | None = None
    ) -> rasterio.io.DatasetReaderBase:
        resampling = resampling or self.resampling
        ds = self._datasets.get((file, resampling))
        if ds is not None:
            return ds
        # Remote band files (STAC assets) are URLs; rasterio reads them through /vsicurl/.
        path: Path | str = file if "://" in file else self.source.root / file
        grid = self.source.grid
        try:
            src = self._stack.enter_context(rasterio.open(path))
            on_grid = (
                src.width == grid.width
                and src.height == grid.height
                and src.transform.almost_equals(grid.affine)
            )
            if not on_grid:
                src = self._stack.enter_context(
                    WarpedVRT(
                        src,
                        crs=src.crs,
                        transform=grid.affine,
                        width=grid.width,
                        height=grid.height,
                        resampling=Resampling[resampling],
                        nodata=self.source.nodata,
                    )
                )
        except (RasterioError, OSError) as e:
            raise RasterReadError(
                f"Cannot open {path} for {self.source.id}: {e}. The file may be missing or corrupt."
            ) from e
        self._datasets[(file, resampling)] = src
        return src

    def _invalid(self, data: NDArray[np.generic]) -> NDArray[np.bool_]:
        """Nodata pixels: the source's nodata value (0 when unset) and, for floats, NaN."""
        bad: NDArray[np.bool_] = data == (self.source.nodata or 0)
        if data.dtype.kind == "f":
            bad |= np.isnan(data)
        return bad

    def read(
        self,
        window: PixelWindow,
        bands: Sequence[str],
        *,
        fill: Mapping[str, float] | None = None,
        out: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """Read ``bands`` (in that order) for a 10 m window as float32 ``[C, H, W]`` raw DN.

        Pixels outside the scene are nodata (0). Bands the scene lacks are filled from ``fill``.
        ``dn_offset`` is applied to valid pixels so every product is on the same DN scale.

        Raises:
            BandMismatchError: a band is neither in the scene nor in ``fill``.
            RasterReadError: the raster cannot be read (corrupt block, vanished file).
        """
        fill = fill or {}
        missing = require_bands(self.source.band_names, bands, fillable=fill.keys())
        shape = (len(bands), window.height, window.width)
        if out is None:
            out = np.zeros(shape, dtype=np.float32)
        elif out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, expected {shape}")
        else:
            out.fill(0)
        grid = self.source.grid
        inner = window.clipped(grid.width, grid.height)
        if inner is not None:
            r0, c0 = inner.row_off - window.row_off, inner.col_off - window.col_off
            dest = out[:, r0 : r0 + inner.height, c0 : c0 + inner.width]
            self._read_inner(inner, bands, missing, dest)
        for i, band in enumerate(bands):
            if band in missing:
                out[i] = fill[band]
        return out

    def _read_inner(
        self,
        inner: PixelWindow,
        bands: Sequence[str],
        missing: Sequence[str],
        dest: NDArray[np.float32],
    ) -> None:
        # Group the requested bands by file so a stacked file is read in one call.
        by_file: dict[str, list[tuple[int, int]]] = {}
        for i, band in enumerate(bands):
            if band not in missing:
                file, index = self._band_slot[band]
                by_file.setdefault(file, []).append((i, index))
        offset = np.float32(self.source.dn_offset)
        for file, slots in by_file.items():
            ds = self._dataset(file)
            try:
                data = ds.read([idx for _, idx in slots], window=inner.as_rasterio())
            except (RasterioError, OSError) as e:
                raise RasterReadError(
                    f"Reading {self.source.root / file} failed at window {inner}: {e}. "
                    "The file may be corrupt or truncated."
                ) from e
            invalid = self._invalid(data)
            for (i, _), band_data, band_invalid in zip(slots, data, invalid, strict=True):
                dest[i] = band_data
                if data.dtype.kind == "f":
                    dest[i][band_invalid] = 0
                if self.source.units == "linear":
                    _linear_to_db(dest[i], ~band_invalid)
                # The offset shifts valid DN only: a nodata pixel (0) stays nodata in every band.
                if offset:
                    dest[i] += offset * ~band_invalid

    def valid_mask(self, window: PixelWindow, step: int) -> NDArray[np.bool_]:
        """Validity (inside the scene and not nodata) of each ``step``×``step`` block of a window.

        Reads one 10 m band at ``1/step`` resolution (served from overviews where the file has
        them), so checking a whole region costs one small read. A block that straddles the scene
        edge counts as invalid, an error of less than ``step`` pixels.
        """
        ref_band = min(self.source.bands, key=lambda b: b.resolution_m)
        blocks = self.read_blocks(window, step, [ref_band], resampling="nearest", raw=True)
        valid = np.zeros(blocks.shape[1:], dtype=bool)
        span = self._block_span(window, step)
        if span is not None:
            br0, bc0, br1, bc1 = span
            valid[br0:br1, bc0:bc1] = ~self._invalid(blocks[0, br0:br1, bc0:bc1])
        return valid

    def _block_span(self, window: PixelWindow, step: int) -> tuple[int, int, int, int] | None:
        """(row0, col0, row1, col1) of the whole ``step`` blocks of a window inside the scene."""
        if window.width % step or window.height % step:
            raise ValueError("window must be a whole number of steps")
        grid = self.source.grid
        inner = window.clipped(grid.width, grid.height)
        if inner is None:
            return None
        c0, r0 = inner.col_off - window.col_off, inner.row_off - window.row_off
        # Only whole blocks inside the scene are read, so no read crosses the scene edge.
        bc0, br0 = -(-c0 // step), -(-r0 // step)
        bc1, br1 = (c0 + inner.width) // step, (r0 + inner.height) // step
        if bc1 <= bc0 or br1 <= br0:
            return None
        return br0, bc0, br1, bc1

    def read_blocks(
        self,
        window: PixelWindow,
        step: int,
        assets: Sequence[BandAsset],
        *,
        resampling: Literal["nearest", "bilinear", "average"] = "nearest",
        raw: bool = False,
    ) -> NDArray[np.float32]:
        """Band assets (bands or the SCL layer) of a window at ``1/step`` resolution.

        Served from overviews where the files have them, like :meth:`valid_mask`. Blocks outside
        the scene (or straddling its edge) are 0. Unless ``raw``, ``dn_offset`` is added to
        valid pixels as :meth:`read` does; nodata pixels stay at the nodata value.

        Returns:
            float32 ``[len(assets), window.height // step, window.width // step]``.
        """
        out = np.zeros((len(assets), window.height // step, window.width // step), dtype=np.float32)
        span = self._block_span(window, step)
        if span is None:
            return out
        br0, bc0, br1, bc1 = span
        win = Window(
            window.col_off + bc0 * step,
            window.row_off + br0 * step,
            (bc1 - bc0) * step,
            (br1 - br0) * step,
        )
        for i, asset in enumerate(assets):
            ds = self._dataset(asset.file, "nearest" if asset.name == "SCL" else None)
            try:
                data = ds.read(
                    asset.index,
                    window=win,
                    out_shape=(br1 - br0, bc1 - bc0),
                    resampling=Resampling[resampling],
                )
            except (RasterioError, OSError) as e:
                raise RasterReadError(
                    f"Reading {asset.name} of {self.source.id} at reduced resolution failed: {e}"
                ) from e
            block = data.astype(np.float32)
            if not raw and self.source.dn_offset and asset.name != "SCL":
                block[~self._invalid(data)] += np.float32(self.source.dn_offset)
            out[i, br0:br1, bc0:bc1] = block
        return out


def _linear_to_db(band: NDArray[np.float32], valid: NDArray[np.bool_]) -> None:
    """Linear backscatter power → dB in place; non-positive values (and nodata) become 0."""
    positive = valid & (band > 0)
    band[positive] = 10.0 * np.log10(band[positive])
    band[~positive] = 0.0


def check_band_count(source: SceneSource, bands: Sequence[str], fill: Mapping[str, float]) -> None:
    """Fail early with a readable message when a model's bands cannot be served by a source."""
    try:
        require_bands(source.band_names, bands, fillable=fill.keys())
    except BandMismatchError as e:
        raise BandMismatchError(f"{source.id}: {e.message}") from e
