"""CORINE Land Cover 2018 (Level 3) onto Dynamic World's nine classes, and patch soft labels.

BigEarthNet patches carry CORINE multi-labels by *name* for the whole 1.2 km patch, not a
raster: a patch says which classes it holds, not how much of each. :func:`patch_soft_labels`
turns such a list into a soft label by giving every CORINE label the same weight and summing
the weights by DW class (``["Coniferous forest", "Mixed forest", "Water bodies"]`` → trees 2/3,
water 1/3). Every tile cut from the patch gets the patch's label.

Judgement calls (DW's class definitions decide): rice fields are flooded vegetation (DW counts
paddies there); fruit trees, olive groves and agro-forestry are trees (DW counts plantations as
trees); CORINE 243 (agriculture with significant natural vegetation) is crops; mineral
extraction, dump and construction sites, salines and intertidal flats are bare; green urban
areas and sport facilities are grass; moors, sclerophyllous vegetation and transitional
woodland/shrub are shrub & scrub; inland and salt marshes and peat bogs are flooded vegetation.
The codes are CLC's own, so a CORINE *raster* maps with the same table
(:data:`CORINE_MAPPING`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from backend.errors import UnknownMappingError
from backend.landcover.labels import (
    DW_CLASSES,
    MULTI_HOT_THRESHOLD,
    N_CLASSES,
    ClassMapping,
    SoftLabels,
)

#: (CLC code, CLC 2018 Level-3 name as BigEarthNet writes it, DW class).
CORINE_CLASSES: tuple[tuple[int, str, str], ...] = (
    (111, "Continuous urban fabric", "built"),
    (112, "Discontinuous urban fabric", "built"),
    (121, "Industrial or commercial units", "built"),
    (122, "Road and rail networks and associated land", "built"),
    (123, "Port areas", "built"),
    (124, "Airports", "built"),
    (131, "Mineral extraction sites", "bare"),
    (132, "Dump sites", "bare"),
    (133, "Construction sites", "bare"),
    (141, "Green urban areas", "grass"),
    (142, "Sport and leisure facilities", "grass"),
    (211, "Non-irrigated arable land", "crops"),
    (212, "Permanently irrigated land", "crops"),
    (213, "Rice fields", "flooded_vegetation"),
    (221, "Vineyards", "crops"),
    (222, "Fruit trees and berry plantations", "trees"),
    (223, "Olive groves", "trees"),
    (231, "Pastures", "grass"),
    (241, "Annual crops associated with permanent crops", "crops"),
    (242, "Complex cultivation patterns", "crops"),
    (
        243,
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
        "crops",
    ),
    (244, "Agro-forestry areas", "trees"),
    (311, "Broad-leaved forest", "trees"),
    (312, "Coniferous forest", "trees"),
    (313, "Mixed forest", "trees"),
    (321, "Natural grassland", "grass"),
    (322, "Moors and heathland", "shrub_and_scrub"),
    (323, "Sclerophyllous vegetation", "shrub_and_scrub"),
    (324, "Transitional woodland/shrub", "shrub_and_scrub"),
    (331, "Beaches, dunes, sands", "bare"),
    (332, "Bare rock", "bare"),
    (333, "Sparsely vegetated areas", "bare"),
    (334, "Burnt areas", "bare"),
    (335, "Glaciers and perpetual snow", "snow_and_ice"),
    (411, "Inland marshes", "flooded_vegetation"),
    (412, "Peatbogs", "flooded_vegetation"),
    (421, "Salt marshes", "flooded_vegetation"),
    (422, "Salines", "bare"),
    (423, "Intertidal flats", "bare"),
    (511, "Water courses", "water"),
    (512, "Water bodies", "water"),
    (521, "Coastal lagoons", "water"),
    (522, "Estuaries", "water"),
    (523, "Sea and ocean", "water"),
)

#: The same table as a raster mapping (CLC codes; 0 and 999 are no data).
CORINE_MAPPING = ClassMapping(
    name="corine-2018",
    title="CORINE Land Cover 2018, Level 3 (BigEarthNet labels)",
    values={
        0: None,
        999: None,
        **{code: DW_CLASSES.index(dw) for code, _, dw in CORINE_CLASSES},
    },
    description=(
        "The 44 CLC Level-3 classes by code (see backend.landcover.corine for the judgement "
        "calls: rice → flooded vegetation, orchards and olive groves → trees, CLC 243 → crops, "
        "extraction/dump/construction sites → bare). 0 and 999 are no data."
    ),
    legend={code: name for code, name, _ in CORINE_CLASSES},
)


def _key(name: str) -> str:
    # BigEarthNet writes "Peatbogs", CLC "Peat bogs"; case and punctuation vary between copies.
    return re.sub(r"[^a-z]", "", name.lower())


_BY_NAME: Mapping[str, int] = {_key(name): DW_CLASSES.index(dw) for _, name, dw in CORINE_CLASSES}


def corine_class(name: str) -> int:
    """The DW index of a CORINE Level-3 class name.

    Raises:
        UnknownMappingError: the name is not a CLC 2018 Level-3 class.
    """
    try:
        return _BY_NAME[_key(name)]
    except KeyError:
        raise UnknownMappingError(
            f"'{name}' is not a CORINE Land Cover 2018 Level-3 class name (e.g. 'Pastures', "
            "'Coniferous forest'); BigEarthNet patch labels use these names."
        ) from None


def patch_fractions(labels: Sequence[str]) -> NDArray[np.float32]:
    """DW class fractions ``(9,)`` of a patch's CORINE labels (equal weight per label)."""
    out = np.zeros(N_CLASSES, dtype=np.float32)
    for name in labels:
        out[corine_class(name)] += 1.0
    total = out.sum()
    return out / total if total > 0 else out


def patch_soft_labels(per_tile: Sequence[Sequence[str]]) -> SoftLabels:
    """Soft labels of tiles from the CORINE labels of the patch each was cut from.

    A tile whose patch has no label gets an all-zero row and ``has_label`` False.
    """
    fractions = (
        np.stack([patch_fractions(labels) for labels in per_tile])
        if per_tile
        else np.zeros((0, N_CLASSES), dtype=np.float32)
    )
    has = fractions.sum(axis=1) > 0
    return SoftLabels(
        fractions=fractions.astype(np.float32),
        labelled_fraction=has.astype(np.float32),
        multi_hot=fractions >= MULTI_HOT_THRESHOLD,
        has_label=has,
    )
