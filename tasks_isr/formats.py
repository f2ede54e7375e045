"""3D-FRONT scenes as the ISR task reads them: one top view per room, every piece of furniture's box, label, rotation.

The reader follows the scene files as 3D-FRONT ships them and as ATISS reads them
(``nv-tlabs/ATISS``, ``scene_synthesis/datasets``): a scene ``<uid>.json`` lists its ``furniture``
(``uid``, ``jid`` = the 3D-FUTURE model, ``valid``) and its rooms (``scene.room[]``: ``type``,
``instanceid``, ``children[]`` with ``ref`` = a furniture uid, ``pos`` [x, y, z], ``rot`` a quaternion
[x, y, z, w] about the up axis y, ``scale``); a model's size is the box of its
``3D-FUTURE-model/<jid>/raw_model.obj`` vertices, its label the ``category`` of ``model_info.json``
(lower case, ``" / "`` as ``"/"``, as ATISS does).

The top view is an orthographic camera looking down: image x is world x, image y is world z.  A
model faces +z in its own frame, so a yaw θ about y turns its front to (sin θ, cos θ) in the image,
which is ISR rotation ``-θ`` (docs/tasks/isr.md: clockwise in the image, 0 facing down).  The images:

* ``renders``: the user's own top views, with ``cameras.json`` saying for each room
  (``"<scene uid>/<room instanceid>"``) its ``image``, ``center`` [x, z] and ``pixels_per_meter``;
* otherwise a **schematic** top view is drawn from the layout (floor, then each footprint in its
  class colour with a darker band along its back): not the paper's renders (it rendered the meshes),
  but the same labels on an image that shows them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageDraw

from syngrpo.data.formats import SOURCE_KEY, DatasetFormat, FormatResult, Problems
from syngrpo.errors import ConfigError
from tasks_isr.rotation import normalize_rotation
from tasks_isr.toy import BACK_BAND, FURNITURE, Footprint

#: ATISS leaves out rooms holding furniture scaled below or above these
MIN_SCALE, MAX_SCALE = 1e-5, 5.0


def _obj_extent(path: Path) -> tuple[list[float], list[float]]:
    """(min, max) of a Wavefront OBJ's vertices (``v x y z`` lines)."""
    lo, hi = [math.inf] * 3, [-math.inf] * 3
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("v "):
                xyz = [float(v) for v in line.split()[1:4]]
                lo = [min(a, b) for a, b in zip(lo, xyz, strict=True)]
                hi = [max(a, b) for a, b in zip(hi, xyz, strict=True)]
    if not math.isfinite(lo[0]):
        raise ValueError(f"{path} has no vertices")
    return lo, hi


def _triangles(mesh: dict[str, Any]) -> list[list[list[float]]]:
    """A floor mesh's triangles as [x, z] corners (its ``xyz`` vertices indexed by ``faces``)."""
    try:
        xz = np.asarray(mesh.get("xyz") or [], dtype=float).reshape(-1, 3)[:, [0, 2]]
        faces = np.asarray(mesh.get("faces") or [], dtype=int).reshape(-1, 3)
        return xz[faces].tolist() if len(xz) else []
    except (ValueError, IndexError):
        return []


def yaw_of(rot: Any) -> float:
    """The rotation about the up axis (radians) of a 3D-FRONT quaternion ``[x, y, z, w]``; ValueError if it tilts."""
    qx, qy, qz, qw = (float(v) for v in rot)
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not norm or abs(qx) / norm > 1e-3 or abs(qz) / norm > 1e-3:
        raise ValueError(f"rot {list(rot)} is not a rotation about the up axis y")
    return 2.0 * math.atan2(qy / norm, qw / norm)


def _colour(label: str) -> tuple[int, int, int]:
    """A class colour: the toy furniture's where the label is one, else one derived from the label."""
    if label in FURNITURE:
        return FURNITURE[label][1]
    h = hashlib.sha1(label.encode()).digest()
    return (60 + h[0] % 160, 60 + h[1] % 160, 60 + h[2] % 160)


class ThreeDFront(DatasetFormat):
    """3D-FRONT scenes + 3D-FUTURE models as ISR records, one per room with furniture.

    ``source``: a scene ``.json`` or the ``3D-FRONT`` folder of them.  Options: ``future`` (the
    ``3D-FUTURE-model`` folder; default: beside ``source``), ``renders`` (top views + ``cameras.json``;
    default: draw schematic ones), ``image_size`` (schematic, 512), ``label`` (``category`` or
    ``super-category``), ``missing_models`` (``error`` or ``skip``).
    """

    name: ClassVar[str] = "3dfront"
    task: ClassVar[str] = "isr"
    homepage: ClassVar[str] = "https://tianchi.aliyun.com/specials/promotion/alibaba-3d-scene-dataset (3D-FRONT, 3D-FUTURE-model)"
    licence: ClassVar[str] = "3D-FRONT / 3D-FUTURE terms of use on the project page (free for academic use; access on request)"

    def __init__(self, *, future: str | None = None, renders: str | None = None, image_size: int = 512,
                 label: str = "category", missing_models: str = "error", margin: float = 0.05) -> None:
        if label not in ("category", "super-category"):
            raise ValueError(f"label must be 'category' or 'super-category', got {label!r}")
        if missing_models not in ("error", "skip"):
            raise ValueError(f"missing_models must be 'error' or 'skip', got {missing_models!r}")
        self.future = Path(future).expanduser() if future else None
        self.renders = Path(renders).expanduser() if renders else None
        self.image_size, self.label, self.missing_models, self.margin = int(image_size), label, missing_models, margin

    def _models(self, source: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
        folder = self.future or (source.parent if source.is_file() else source).parent / "3D-FUTURE-model"
        info = folder / "model_info.json"
        if not info.is_file():
            raise ConfigError(f"{info} does not exist; pass the 3D-FUTURE-model folder (it holds model_info.json and "
                              "one folder per model) as --option future=DIR")
        rows = json.loads(info.read_text(encoding="utf-8"))
        return folder, {str(r.get("model_id")): r for r in rows if isinstance(r, dict)}

    def read(self, source: Path, *, split: str | None = None, image_root: Path | None = None,
             workdir: Path | None = None) -> FormatResult:
        scenes = [source] if source.is_file() else sorted(source.glob("*.json"))
        if not scenes:
            raise ConfigError(f"{source}: no 3D-FRONT scene files (*.json)")
        future, info = self._models(source)
        cameras = self._cameras()
        if self.renders is None and workdir is None:
            raise ConfigError("3dfront draws schematic top views and needs a folder for them; pass --option "
                              "renders=DIR (your own top views + cameras.json) or convert with --out")
        records, problems, notes = [], Problems(), []
        extents: dict[str, tuple[list[float], list[float]]] = {}
        skipped = {"invalid scale": 0, "no furniture": 0, "missing model": 0}
        for scene_file in scenes:
            scene = json.loads(scene_file.read_text(encoding="utf-8"))
            furniture = {f.get("uid"): f for f in scene.get("furniture") or [] if isinstance(f, dict) and f.get("valid", True)}
            floors = {m.get("uid"): m for m in scene.get("mesh") or [] if isinstance(m, dict) and m.get("type") == "Floor"}
            for r, room in enumerate((scene.get("scene") or {}).get("room") or [], start=1):
                where = f"{scene_file} room {r} ({room.get('instanceid')})"
                objects, floor_xz, bad = [], [], False  # floor_xz: triangles
                for c, child in enumerate(room.get("children") or [], start=1):
                    ref = child.get("ref")
                    if ref in floors:
                        floor_xz.extend(_triangles(floors[ref]))
                        continue
                    item = furniture.get(ref)
                    if item is None:
                        continue  # walls, doors, lights: not furniture
                    at = f"{where} child {c} (jid {item.get('jid')})"
                    try:
                        scale = [float(v) for v in child.get("scale") or (1, 1, 1)]
                        if any(abs(s) < MIN_SCALE or abs(s) > MAX_SCALE for s in scale):
                            bad = True  # ATISS's rule: such a room is left out
                            break
                        yaw = yaw_of(child.get("rot") or (0, 0, 0, 1))
                        pos = [float(v) for v in child.get("pos")]
                    except (TypeError, ValueError) as exc:
                        problems.add(at, f"has an unreadable pose ({exc})", "fix pos [x, y, z] / rot [x, y, z, w] / scale")
                        continue
                    jid = str(item.get("jid"))
                    model = info.get(jid)
                    obj = future / jid / "raw_model.obj"
                    if model is None or not obj.is_file():
                        if self.missing_models == "skip":
                            skipped["missing model"] += 1
                            continue
                        missing = "model_info.json has no entry for it" if model is None else f"{obj} is missing"
                        problems.add(at, missing, "point --option future= at the full 3D-FUTURE-model folder, or "
                                     "--option missing_models=skip to leave such furniture out")
                        continue
                    if jid not in extents:
                        try:
                            extents[jid] = _obj_extent(obj)
                        except ValueError as exc:
                            problems.add(at, str(exc), "re-download this model")
                            continue
                    name = str(model.get(self.label) or "unknown").lower().replace(" / ", "/")
                    objects.append((name, extents[jid], scale, yaw, pos))
                if bad:
                    skipped["invalid scale"] += 1
                    continue
                if not objects:
                    skipped["no furniture"] += 1
                    continue
                room_id = f"{scene.get('uid', scene_file.stem)}/{room.get('instanceid', r)}"
                try:
                    records.append(self._room(room_id, objects, floor_xz, cameras, workdir, where))
                except ValueError as exc:
                    problems.add(where, str(exc), "add the room to cameras.json, or leave --option renders out")
        problems.raise_if_any(f"3D-FRONT scenes {source}")
        notes += [f"{n} room(s) left out: {why}" if why != "missing model" else f"{n} piece(s) of furniture left out: "
                  "no 3D-FUTURE model" for why, n in skipped.items() if n]
        return FormatResult(records, notes)

    def _cameras(self) -> dict[str, Any]:
        if self.renders is None:
            return {}
        path = self.renders / "cameras.json"
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; it says where each room's top view is (docs/data.md, 3D-FRONT)")
        return json.loads(path.read_text(encoding="utf-8"))

    def _room(self, room_id: str, objects: list[tuple], floor_xz: list[list[list[float]]], cameras: dict[str, Any],
              workdir: Path | None, where: str) -> dict[str, Any]:
        footprints = []
        for name, (lo, hi), scale, yaw, pos in objects:
            x0, x1 = sorted((lo[0] * scale[0], hi[0] * scale[0]))
            z0, z1 = sorted((lo[2] * scale[2], hi[2] * scale[2]))
            mx, mz = (x0 + x1) / 2, (z0 + z1) / 2
            c, s = math.cos(yaw), math.sin(yaw)
            # the model's box centre, turned by the yaw about +y (x' = c x + s z, z' = -s x + c z), then placed
            cx, cz = pos[0] + c * mx + s * mz, pos[2] - s * mx + c * mz
            footprints.append((name, cx, cz, x1 - x0, z1 - z0, normalize_rotation(-math.degrees(yaw))))
        if self.renders is not None:
            cam = cameras.get(room_id)
            if not isinstance(cam, dict):
                raise ValueError(f"cameras.json has no entry {room_id!r}")
            (ccx, ccz), ppm = cam["center"], float(cam["pixels_per_meter"])
            image = (self.renders / cam["image"]).absolute()
            with Image.open(image) as im:
                width, height = im.size
        else:
            xs = [p[0] for tri in floor_xz for p in tri] + [f[1] for f in footprints]
            zs = [p[1] for tri in floor_xz for p in tri] + [f[2] for f in footprints]
            reach = max(max(f[3], f[4]) for f in footprints)
            span = max(max(xs) - min(xs), max(zs) - min(zs)) + reach
            width = height = self.image_size
            ppm = width * (1 - 2 * self.margin) / span
            ccx, ccz = (max(xs) + min(xs)) / 2, (max(zs) + min(zs)) / 2
            image = None
        placed = [Footprint(n, (x - ccx) * ppm + width / 2, (z - ccz) * ppm + height / 2, w * ppm, d * ppm, rot)
                  for n, x, z, w, d, rot in footprints]
        if image is None:
            assert workdir is not None
            image = (workdir / "topviews" / f"{room_id.replace('/', '__')}.png").absolute()
            self._draw(placed, floor_xz, (ccx, ccz), ppm, width, height, image)
        objects_out = [{"bbox_2d": fp.bbox(), "label": fp.label, "rotation": round(fp.rotation, 2)} for fp in placed]
        return {"id": room_id, "image": str(image), "width": width, "height": height, "objects": objects_out,
                "room": room_id, "render": "user" if self.renders is not None else "schematic", SOURCE_KEY: where}

    @staticmethod
    def _draw(placed: list[Footprint], floor: list[list[list[float]]], centre: tuple[float, float], ppm: float,
              width: int, height: int, out: Path) -> None:
        img = Image.new("RGB", (width, height), (28, 28, 32))
        draw = ImageDraw.Draw(img)
        for tri in floor:  # the floor mesh's triangles
            draw.polygon([((x - centre[0]) * ppm + width / 2, (z - centre[1]) * ppm + height / 2) for x, z in tri],
                         fill=(205, 200, 190))
        pixels = np.array(img)
        for fp in placed:
            fp.paint(pixels, _colour(fp.label))
            fp.paint(pixels, tuple(int(v * 0.55) for v in _colour(fp.label)), back=BACK_BAND)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out)
