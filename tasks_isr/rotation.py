"""Object rotations of top-view scenes, and how they move with the image.

Convention (used by the labels, the prompt and the toy generator): ``rotation``
is in degrees, in ``[0, 360)``, measured **clockwise as seen in the image**
(image ``y`` points down), and ``0`` is the pose in which the object's front
faces the bottom of the image (+y).  So the facing direction of an object with
rotation ``t`` is the unit vector ``(-sin t, cos t)`` in image coordinates:
90 faces left, 180 faces up, 270 faces right.

Rotations follow the image the way its pixels do: an axis-aligned map
``x' = sx*x + tx, y' = sy*y + ty`` sends the facing vector ``(fx, fy)`` to
``(sx*fx, sy*fy)``.  A uniform scale or a translation leaves the rotation
unchanged, a mirror flips it, and a non-uniform resize skews it (exactly only
for multiples of 90 degrees, which it keeps).
"""

from __future__ import annotations

import math

from syngrpo.perception.geometry import ImageTransform


def normalize_rotation(degrees: float) -> float:
    """``degrees`` folded into ``[0, 360)``."""
    folded = math.fmod(float(degrees), 360.0)
    if folded < 0:
        folded += 360.0
    return 0.0 if folded >= 360.0 else folded + 0.0  # ``+ 0.0`` turns -0.0 into 0.0


def facing_vector(degrees: float) -> tuple[float, float]:
    """The unit vector an object with this rotation faces, in image coordinates (y down)."""
    t = math.radians(degrees)
    return -math.sin(t), math.cos(t)


def rotation_of(fx: float, fy: float) -> float:
    """Inverse of :func:`facing_vector`: the rotation whose facing direction is ``(fx, fy)``."""
    return normalize_rotation(math.degrees(math.atan2(-fx, fy)))


def transform_rotation(degrees: float | None, transform: ImageTransform) -> float | None:
    """The rotation after the image went through ``transform`` (``None`` stays ``None``).

    Uniform scales and translations return the value unchanged (not even
    re-normalised), so the identity transform is exactly the identity.
    Mirrors (a negative scale) and non-uniform scales turn the facing vector.
    """
    if degrees is None:
        return None
    if transform.sx > 0 and transform.sy > 0 and transform.is_uniform:
        return degrees
    fx, fy = facing_vector(degrees)
    fx, fy = transform.sx * fx, transform.sy * fy
    if fx == 0 and fy == 0:
        return degrees
    result = rotation_of(fx, fy)
    # Keep multiples of 90 exact (atan2 of a skewed axis vector can come back as 89.99999999999999).
    nearest = round(result / 90.0) * 90.0
    if abs(result - nearest) < 1e-9:
        result = normalize_rotation(nearest)
    return result


def angular_error(predicted: float, target: float, *, symmetry: int = 1) -> float:
    """Smallest angle between two rotations, in degrees, compared modulo ``360 / symmetry``.

    ``symmetry`` is the order of the object's rotational symmetry seen from the
    top: 1 for objects with a front (beds, chairs), 2 for a plain rectangular
    table (180 degrees apart looks the same), 4 for a square one.  The result is
    in ``[0, 180 / symmetry]``.
    """
    if symmetry < 1:
        raise ValueError(f"symmetry must be a positive integer, got {symmetry}")
    period = 360.0 / symmetry
    d = math.fmod(abs(float(predicted) - float(target)), period)
    return min(d, period - d)
