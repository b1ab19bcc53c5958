"""BigEarthNet patch folders (v1.0, Sentinel-1 and Sentinel-2): what their metadata JSON says.

A BigEarthNet-S1 patch (``S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48/``) holds ``*_VV.tif``,
``*_VH.tif`` (float32 σ⁰ in dB on the matching S2 patch's 10 m grid) and
``*_labels_metadata.json`` with the CORINE Land Cover 2018 labels, the patch's UTM bounds, the
acquisition time, the source scene and the name of the matching S2 patch
(``corresponding_s2_patch``). A BigEarthNet-S2 patch holds 12 L2A bands and the same JSON with
``acquisition_date`` and ``tile_source`` (the L1C product it was made from).

The import (:mod:`backend.imagery.scene_import`) takes the date, the MGRS tile, a title and the
labels from here; pairing (:mod:`backend.imagery.pairing`) does *not* use the partner's name: it
finds partners by footprint and date, as it must for imagery that names none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from backend.errors import SceneImportError

METADATA_SUFFIX = "_labels_metadata.json"
_S1_PATCH = re.compile(r"^S1[AB]_IW_GRDH_1S[DS][VH]_(\d{8})T\d{6}_(\d{2}[A-Z]{3})_\d+_\d+$")
_TILE_IN_SOURCE = re.compile(r"_T(\d{2}[A-Z]{3})_")


@dataclass(frozen=True)
class PatchMetadata:
    """One BigEarthNet patch's metadata (``*_labels_metadata.json``)."""

    name: str
    sensor: str  # "S1" or "S2"
    date: str | None  # YYYY-MM-DD
    acquired: str | None  # as written in the JSON (time of day included)
    mgrs_tile: str | None
    labels: tuple[str, ...]
    partner: str | None  # the S2 patch an S1 patch was prepared for
    scene_source: str | None  # the S1 scene or S2 L1C product the patch was cut from

    def title(self) -> str:
        """E.g. ``BigEarthNet-S1 patch 33UUP 87_48 (2017-06-13)``."""
        cell = "_".join(self.name.split("_")[-2:])
        tile = f" {self.mgrs_tile}" if self.mgrs_tile else ""
        return f"BigEarthNet-{self.sensor} patch{tile} {cell} ({self.date or 'date unknown'})"

    def describe(self) -> str:
        """A caveat line for the source: the labels and, for S1, the S2 partner."""
        labels = "; ".join(self.labels) or "none"
        text = f"BigEarthNet patch {self.name}: CORINE Land Cover 2018 labels: {labels}."
        if self.partner:
            text += f" Prepared for the Sentinel-2 patch {self.partner}."
        return text


def metadata_file(folder: Path) -> Path | None:
    """The folder's ``<name>_labels_metadata.json``, or None when it is not a BigEarthNet patch."""
    exact = folder / f"{folder.name}{METADATA_SUFFIX}"
    if exact.is_file():
        return exact
    found = sorted(folder.glob(f"*{METADATA_SUFFIX}"))
    return found[0] if len(found) == 1 else None


def read_patch_metadata(path: Path) -> PatchMetadata:
    """Parse a patch's ``*_labels_metadata.json``.

    Raises:
        SceneImportError: the file is not JSON or not a BigEarthNet patch description.
    """
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SceneImportError(f"Cannot read the BigEarthNet metadata {path}: {e}") from e
    if not isinstance(raw, dict) or "labels" not in raw:
        raise SceneImportError(
            f"{path.name} is not a BigEarthNet patch description (no 'labels' entry)."
        )
    name = path.name[: -len(METADATA_SUFFIX)]
    acquired = raw.get("acquisition_time") or raw.get("acquisition_date")
    date = None
    if isinstance(acquired, str) and re.match(r"\d{4}-\d{2}-\d{2}", acquired):
        date = acquired[:10]
    s1 = _S1_PATCH.match(name)
    sensor = "S1" if s1 or "corresponding_s2_patch" in raw else "S2"
    tile: str | None = s1.group(2) if s1 else None
    source = raw.get("scene_source") or raw.get("tile_source")
    if tile is None and isinstance(source, str):
        m = _TILE_IN_SOURCE.search(source)
        tile = m.group(1) if m else None
    labels = raw.get("labels") or []
    partner = raw.get("corresponding_s2_patch")
    return PatchMetadata(
        name=name,
        sensor=sensor,
        date=date,
        acquired=str(acquired) if acquired else None,
        mgrs_tile=tile,
        labels=tuple(str(x) for x in labels),
        partner=str(partner) if partner else None,
        scene_source=str(source) if source else None,
    )
