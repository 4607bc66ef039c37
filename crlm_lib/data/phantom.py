"""Abdominal CT phantom of a patient with colorectal liver metastases (vectorised numpy).

Geometry is defined in patient coordinates (DICOM LPS, mm: +x patient left, +y posterior,
+z superior) independently of the voxel grid, so that the same patient rendered at the smoke,
cpu or paper resolution has the same anatomy and the same image-derived quantities.

Anatomy and portal-venous attenuation (HU):

- air -1000 outside an elliptic body outline; subcutaneous fat -100; other soft tissue at 40;
- spine (vertebral body: cancellous 250, cortex 700; posterior element 500), aorta 170,
  kidneys 150, spleen 115;
- liver: an ellipsoid on the patient's right, ``liver_hu`` ~ 110 (lowered by 20-40 HU with
  steatosis); split into a right and a left lobe by a sagittal plane ``x = x_c + u a`` (Cantlie's
  line; ``u`` patient-varied), so that the left-lobe fraction of the ellipsoid is
  ``(1 - u)^2 (2 + u) / 4`` (volume of an ellipsoidal cap);
- portal vein (170 HU): a trunk rising to the bifurcation at ``bifurcation_z_mm`` (recorded,
  patient-varied), right branch with anterior/posterior sector branches, left branch;
- hepatic veins (160 HU): right, middle and left veins converging on a confluence at the
  top of the liver;
- tumours: spheres of ``tumour_hu`` (45 HU on average; a patient's tumours share it, and the
  synthetic cohort's image-only *attenuation phenotype* sets it, see
  :mod:`crlm_lib.data.synthetic`) with a necrotic core 25 HU darker when larger than 4 cm and a
  3 mm rim of 85 HU, each entirely inside one lobe;
- partial-volume blur (Gaussian, 0.8 voxel in-plane) and correlated Gaussian noise of
  ``noise_hu`` (10-20 HU) like portal-venous CT.

Masks: ``liver`` (whole ellipsoid, tumours and intrahepatic vessels included), ``remnant``
(future liver remnant: the lobe left after resecting the lobe with more tumour volume, minus every
tumour, i.e. wedge resections in the remnant), ``hepatic`` and ``portal`` (vessel tubes inside the
liver), and one mask per tumour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

LOBES = ("right", "left")


@dataclass(frozen=True)
class Tumour:
    """One metastasis: sphere of ``radius_mm`` at ``centre_mm`` (x, y, z) in ``lobe``."""

    centre_mm: tuple[float, float, float]
    radius_mm: float
    lobe: str

    @property
    def diameter_cm(self) -> float:
        return 2.0 * self.radius_mm / 10.0

    @property
    def volume_ml(self) -> float:
        return 4.0 / 3.0 * np.pi * self.radius_mm**3 / 1000.0


@dataclass(frozen=True)
class Anatomy:
    """Everything needed to render one patient (mm, HU)."""

    body_axes_mm: tuple[float, float]
    fat_mm: float
    liver_centre_mm: tuple[float, float, float]
    liver_axes_mm: tuple[float, float, float]
    split_u: float
    liver_hu: float
    bifurcation_z_mm: float
    tumours: tuple[Tumour, ...]
    noise_hu: float
    tumour_hu: float = 45.0
    spleen_centre_mm: tuple[float, float, float] = (105.0, 40.0, 0.0)
    vessels: dict = field(default_factory=dict, compare=False)

    @property
    def split_x_mm(self) -> float:
        return self.liver_centre_mm[0] + self.split_u * self.liver_axes_mm[0]

    @property
    def remnant_lobe(self) -> str:
        """Lobe left after resection: the one holding less tumour volume (left if none)."""
        vol = {lobe: sum(t.volume_ml for t in self.tumours if t.lobe == lobe) for lobe in LOBES}
        return "left" if vol["right"] >= vol["left"] else "right"


def left_lobe_fraction(split_u: float) -> float:
    """Volume fraction of an ellipsoid beyond the plane at ``u`` semi-axes from its centre."""
    return (1.0 - split_u) ** 2 * (2.0 + split_u) / 4.0


def image_quantities(anat: Anatomy) -> dict[str, float]:
    """Image-only quantities of the phantom geometry (what a reader measures on the masks).

    Returns
    -------
    dict
        ``liver_volume_ml``, ``tumour_volume_ml`` (sum), ``n_tumours``, ``bilobar`` (0/1),
        ``max_diameter_cm``, ``remnant_fraction`` = (remnant lobe - its tumours) / (liver - all
        tumours), computed analytically (voxelisation changes them by a few percent).
    """
    a, b, c = anat.liver_axes_mm
    liver = 4.0 / 3.0 * np.pi * a * b * c / 1000.0
    lobe_frac = {"left": left_lobe_fraction(anat.split_u)}
    lobe_frac["right"] = 1.0 - lobe_frac["left"]
    tv = sum(t.volume_ml for t in anat.tumours)
    rem = anat.remnant_lobe
    rem_tv = sum(t.volume_ml for t in anat.tumours if t.lobe == rem)
    return {
        "liver_volume_ml": liver,
        "tumour_volume_ml": tv,
        "n_tumours": float(len(anat.tumours)),
        "bilobar": float(len({t.lobe for t in anat.tumours}) > 1),
        "max_diameter_cm": max((t.diameter_cm for t in anat.tumours), default=0.0),
        "remnant_fraction": (lobe_frac[rem] * liver - rem_tv) / (liver - tv),
    }


def sample_anatomy(
    rng: np.random.Generator,
    diameters_cm: list[float],
    lobes: list[str],
    steatosis: bool,
    table_z_mm: float,
) -> Anatomy:
    """Sample a patient's geometry and place the tumours (largest first) in their lobes.

    A tumour that does not fit its lobe after 60 tries moves to the other lobe, then shrinks by
    10% until it fits, so the returned tumours (not the requested ones) define the clinical
    variables.
    """
    axes = (
        float(rng.uniform(85, 105)),  # a: left-right
        float(rng.uniform(70, 90)),  # b: antero-posterior
        float(rng.uniform(65, 85)),  # c: cranio-caudal
    )
    centre = (float(rng.uniform(-50, -35)), float(rng.uniform(-20, -5)), table_z_mm)
    u = float(rng.uniform(0.15, 0.35))
    split_x = centre[0] + u * axes[0]
    placed: list[Tumour] = []
    for d_cm, lobe in sorted(zip(diameters_cm, lobes, strict=True), key=lambda p: -p[0]):
        r = d_cm * 5.0
        order = [lobe, "left" if lobe == "right" else "right"]
        done = False
        while not done:
            for lb in order:
                for _ in range(60):
                    p = _random_point_in_ellipsoid(rng, centre, axes, margin=1.15 * r)
                    if p is None:
                        break
                    side = p[0] - split_x
                    if (lb == "right" and side > -1.1 * r) or (lb == "left" and side < 1.1 * r):
                        continue
                    if any(
                        np.linalg.norm(np.subtract(p, t.centre_mm)) < r + t.radius_mm + 2
                        for t in placed
                    ):
                        continue
                    placed.append(Tumour(tuple(map(float, p)), float(r), lb))
                    done = True
                    break
                if done:
                    break
            if not done:
                r *= 0.9
                if r < 3.0:
                    break
    hu = float(rng.normal(112, 5)) - (float(rng.uniform(20, 40)) if steatosis else 0.0)
    bif_z = centre[2] - 0.15 * axes[2] + float(rng.normal(0, 6))
    return Anatomy(
        body_axes_mm=(float(rng.uniform(150, 180)), float(rng.uniform(110, 135))),
        fat_mm=float(rng.uniform(10, 30)),
        liver_centre_mm=centre,
        liver_axes_mm=axes,
        split_u=u,
        liver_hu=hu,
        bifurcation_z_mm=bif_z,
        tumours=tuple(placed),
        noise_hu=float(rng.uniform(10, 20)),
        spleen_centre_mm=(float(rng.uniform(95, 115)), float(rng.uniform(30, 50)), table_z_mm),
    )


def _random_point_in_ellipsoid(rng, centre, axes, margin):
    inner = np.array(axes) - margin
    if (inner <= 0).any():
        return None
    v = rng.normal(size=3)
    v /= np.linalg.norm(v)
    v *= rng.uniform() ** (1 / 3)
    return np.array(centre) + v * inner


def _segment_dist2(x, y, z, a, b):
    """Squared distance (mm^2) of every voxel to the segment a-b; broadcasts to [Z, Y, X]."""
    a = np.asarray(a, dtype=np.float32)
    d = np.asarray(b, dtype=np.float32) - a
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / float(d @ d), 0.0, 1.0)
    return (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2


def vessel_segments(anat: Anatomy) -> dict[str, list[tuple[tuple, tuple, float]]]:
    """Portal and hepatic vein trees as (start, end, radius_mm) segments in mm."""
    xc, yc, zc = anat.liver_centre_mm
    a, b, c = anat.liver_axes_mm
    sx = anat.split_x_mm
    zb = anat.bifurcation_z_mm
    left_mid = sx + 0.5 * (xc + a - sx)
    hilum = (sx - 8.0, yc + 0.15 * b, zb)
    right_end = (xc - 0.55 * a, yc + 0.05 * b, zb + 5.0)
    portal = [
        ((sx + 5.0, yc + 0.35 * b, zb - 70.0), hilum, 7.0),
        (hilum, right_end, 5.5),
        (right_end, (xc - 0.6 * a, yc - 0.45 * b, zb + 25.0), 3.5),
        (right_end, (xc - 0.55 * a, yc + 0.45 * b, zb - 20.0), 3.5),
        (hilum, (left_mid, yc - 0.25 * b, zb + 12.0), 4.5),
    ]
    conf = (sx - 5.0, yc + 0.45 * b, zc + 0.75 * c)
    hepatic = [
        (conf, (xc - 0.7 * a, yc + 0.05 * b, zc - 0.35 * c), 4.5),
        (conf, (sx - 3.0, yc - 0.4 * b, zc - 0.45 * c), 4.0),
        (conf, (left_mid, yc - 0.2 * b, zc - 0.1 * c), 3.5),
    ]
    return {"portal": portal, "hepatic": hepatic}


@dataclass
class Rendered:
    """A rendered patient: HU volume, masks and slice positions."""

    hu: np.ndarray  # int16 [Z, Y, X], HU
    masks: dict[str, np.ndarray]  # bool [Z, Y, X]: liver, remnant, hepatic, portal
    lesions: list[np.ndarray]  # bool [Z, Y, X] per tumour
    z_mm: np.ndarray  # [Z] slice centres, increasing
    x0_mm: float
    y0_mm: float


@dataclass(frozen=True, eq=False)  # arrays: no element-wise ==
class _Grid:
    """Voxel centres of a render (mm, broadcastable: ``x`` ``[1, 1, X]``, ``y`` ``[1, Y, 1]``,
    ``z`` ``[Z, 1, 1]``, float32) and the volume's shape ``(Z, Y, X)``."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    shape: tuple[int, int, int]

    def ellipsoid(self, centre, axes) -> np.ndarray:
        """Voxels inside the axis-aligned ellipsoid (mm; broadcast shape)."""
        return (
            ((self.x - centre[0]) / axes[0]) ** 2
            + ((self.y - centre[1]) / axes[1]) ** 2
            + ((self.z - centre[2]) / axes[2]) ** 2
        ) <= 1.0

    def cylinder(self, cx, cy, rx, ry) -> np.ndarray:
        """Voxels inside the elliptic cylinder along z (mm), ``[Z, Y, X]``."""
        x, y = self.x, self.y
        return np.broadcast_to(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0, self.shape)


def render(
    anat: Anatomy,
    matrix: int,
    pixel_spacing_mm: float,
    z_mm: np.ndarray,
    rng: np.random.Generator,
) -> Rendered:
    """Render the phantom on a ``[len(z_mm), matrix, matrix]`` grid centred on x = y = 0.

    In order: the body outside the liver (:func:`_body_hu`), the liver and its vessels
    (:func:`_liver_and_vessels`), the tumours (:func:`_tumours`), then smoothing and the
    noise drawn from ``rng`` (:func:`_blur_and_noise`).

    Parameters
    ----------
    z_mm : ndarray [Z]
        Slice centres (mm, increasing).
    rng : Generator
        Noise source.

    Returns
    -------
    Rendered
        ``hu`` int16 HU (air -1000), masks and lesions as bool arrays.
    """
    dx = float(pixel_spacing_mm)
    x0 = -(matrix - 1) / 2.0 * dx
    y0 = x0
    z = np.asarray(z_mm, dtype=np.float32)[:, None, None]
    grid = _Grid(
        x=(x0 + dx * np.arange(matrix, dtype=np.float32))[None, None, :],
        y=(y0 + dx * np.arange(matrix, dtype=np.float32))[None, :, None],
        z=z,
        shape=(z.shape[0], matrix, matrix),
    )
    hu = _body_hu(grid, anat)
    masks = _liver_and_vessels(grid, anat, hu)
    lesions, any_tumour = _tumours(grid, anat, hu, masks["liver"])
    side = np.broadcast_to(grid.x > anat.split_x_mm, grid.shape)
    rem_side = side if anat.remnant_lobe == "left" else ~side
    masks["remnant"] = masks["liver"] & rem_side & ~any_tumour
    hu = _blur_and_noise(hu, anat.noise_hu, rng)
    order = ("liver", "remnant", "hepatic", "portal")
    return Rendered(hu, {k: masks[k] for k in order}, lesions, np.asarray(z_mm, float), x0, y0)


def _body_hu(grid: _Grid, anat: Anatomy) -> np.ndarray:
    """HU of everything but the liver: air, fat, soft tissue, spine, aorta, kidneys and
    spleen (float32 ``[Z, Y, X]``)."""
    A, B = anat.body_axes_mm
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    hu[grid.cylinder(0.0, 0.0, A, B)] = -100.0
    hu[grid.cylinder(0.0, 0.0, A - anat.fat_mm, B - anat.fat_mm)] = 40.0
    spine_y = 0.55 * B
    hu[grid.cylinder(0.0, spine_y, 22.0, 18.0)] = 700.0
    hu[grid.cylinder(0.0, spine_y, 19.0, 15.0)] = 250.0
    hu[grid.cylinder(0.0, spine_y + 32.0, 7.0, 14.0)] = 500.0
    hu[grid.cylinder(22.0, spine_y - 30.0, 11.0, 11.0)] = 170.0  # aorta
    zc = anat.liver_centre_mm[2]
    for side in (-1.0, 1.0):
        hu[grid.ellipsoid((side * 65.0, spine_y - 5.0, zc - 70.0), (28.0, 22.0, 50.0))] = 150.0
    hu[grid.ellipsoid(anat.spleen_centre_mm, (35.0, 45.0, 55.0))] = 115.0
    return hu


def _liver_and_vessels(grid: _Grid, anat: Anatomy, hu: np.ndarray) -> dict[str, np.ndarray]:
    """Paint the liver and its portal and hepatic veins into ``hu`` (in place); their masks
    (``liver``, and each vessel tree inside the liver) as bool ``[Z, Y, X]``."""
    liver = np.broadcast_to(grid.ellipsoid(anat.liver_centre_mm, anat.liver_axes_mm), grid.shape)
    liver = liver.copy()
    hu[liver] = anat.liver_hu
    masks: dict[str, np.ndarray] = {"liver": liver}
    for name, segs in vessel_segments(anat).items():
        tube = np.zeros(grid.shape, dtype=bool)
        for a, b, r in segs:
            tube |= _segment_dist2(grid.x, grid.y, grid.z, a, b) <= r * r
        hu[tube] = 170.0 if name == "portal" else 160.0
        masks[name] = tube & liver
    return masks


def _tumours(
    grid: _Grid, anat: Anatomy, hu: np.ndarray, liver: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Paint the tumours into ``hu`` (in place: an 85 HU rim, the patient's ``tumour_hu``
    inside, a darker core in those over 20 mm of radius); each tumour's mask and their union."""
    shape = grid.shape
    lesions: list[np.ndarray] = []
    any_tumour = np.zeros(shape, dtype=bool)
    for t in anat.tumours:
        cx, cy, cz = t.centre_mm
        d2 = (grid.x - cx) ** 2 + (grid.y - cy) ** 2 + (grid.z - cz) ** 2
        sphere = np.broadcast_to(d2 <= t.radius_mm**2, shape) & liver
        if not sphere.any():
            # Partial volume: a tumour smaller than a voxel of a coarse grid (the smoke profile's
            # 8 mm pixels) still marks the voxel holding its centre, so that every tumour of the
            # clinical table has a non-empty segment, as in the real collection's SEGs.
            sphere = np.zeros(shape, dtype=bool)
            sphere[np.unravel_index(int(np.argmin(np.broadcast_to(d2, shape))), shape)] = True
        hu[sphere] = 85.0
        hu[sphere & (d2 <= max(t.radius_mm - 3.0, 0.0) ** 2)] = anat.tumour_hu
        if t.radius_mm > 20.0:
            hu[sphere & (d2 <= (0.5 * t.radius_mm) ** 2)] = anat.tumour_hu - 25.0
        lesions.append(sphere.copy())
        any_tumour |= sphere
    return lesions, any_tumour


def _blur_and_noise(hu: np.ndarray, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """The scanner's blur and in-plane correlated noise of SD ``noise_hu`` (drawn from
    ``rng``), rounded to int16 HU in [-1024, 3071]."""
    hu = ndimage.gaussian_filter(hu, sigma=(0.4, 0.8, 0.8), mode="nearest")
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), (0, 0.7, 0.7))
    noise *= noise_hu / max(float(noise.std()), 1e-6)
    return np.clip(np.rint(hu + noise), -1024, 3071).astype(np.int16)
