"""Checking what clients send, before anything touches the queue, the disk or a model.

Every refusal is an :class:`ApiError` with an HTTP status, a stable machine-readable ``code``
and a message that says what was wrong; the app turns it into
``{"error": {"code": ..., "message": ...}}``.  The ``inprocess`` transport runs the same checks,
so a job is refused for the same reason with or without HTTP.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from syngrpo.synthesis.server.config import ServerConfig

#: client idempotency keys: no slashes, no dots-only names, nothing a path could be built from
#: (matched with ``fullmatch``: ``$`` would also match before a trailing newline)
KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
#: server job ids: 32 lowercase hex digits (uuid4().hex)
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})


class ApiError(Exception):
    """A refusal: ``status`` (4xx), ``code`` (stable), ``message`` (for humans)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: dict[str, Any] | None = None, *, close: bool = False) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details or {}
        #: close the connection after the answer: the rest of the body is not worth reading (stalled, undecodable)
        self.close = close

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class SubmissionBody(BaseModel):
    """The JSON body of ``POST /v1/jobs`` (the shape of :meth:`syngrpo.synthesis.transport.SynthesisJob.to_json`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key: str
    image: str = Field(description="base64 of a PNG, JPEG or WebP file")
    boxes: list[list[float]]
    labels: list[str]
    description: str
    options: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0, lt=2**63)


@dataclass
class Submission:
    """A submission that passed every check, with its image decoded."""

    key: str
    fingerprint: str
    image: Image.Image
    png: bytes
    boxes: list[list[float]]
    labels: list[str]
    description: str
    synthesizer: str
    options: dict[str, Any]
    seed: int

    @property
    def group_key(self) -> str:
        """Jobs with the same group key may share one batched synthesizer call."""
        return self.synthesizer + "|" + json.dumps(self.options, sort_keys=True, separators=(",", ":"))


def parse_submission(raw: bytes | bytearray) -> SubmissionBody:
    """Parse the body: malformed JSON → 400 ``bad_json``; wrong fields or types → 422 ``invalid_request``."""
    if not raw.strip():
        raise ApiError(400, "bad_json", "the request body is empty; send a JSON object")
    try:
        return SubmissionBody.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] in ("json_invalid", "json_type") for e in errors):
            msg = errors[0].get("msg", "invalid JSON")
            raise ApiError(400, "bad_json", f"the request body is not valid JSON: {msg}") from None
        if any(e["type"] == "model_type" for e in errors):
            raise ApiError(422, "invalid_request", "the request body must be a JSON object") from None
        parts = []
        for e in errors[:10]:
            loc = ".".join(str(p) for p in e["loc"]) or "(body)"
            msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
            parts.append(f"{loc}: {msg}")
        raise ApiError(422, "invalid_request", "; ".join(parts)) from None


def check_bounds(body: SubmissionBody, config: ServerConfig) -> None:
    """Every string and list of a parsed submission within its bound (422), before anything copies it.

    The image is bounded by ``max_request_bytes`` and ``max_image_pixels`` (:func:`decode_image`);
    this bounds the rest, which is stored in the job's row and sent back by every listing: the key
    (128), the boxes and labels (``max_boxes``; ``max_label_chars`` each), the description
    (``max_description_chars``) and the options: ``max_options_bytes`` as JSON, and every string in
    them, keys included, ``max_description_chars`` at most.  Without these bounds twelve 29 KB
    gzip-encoded jobs with long ``distractor_classes`` held 1.1 GiB and a listing of them was 348 MB
    (issue 24, item 1).  Cheap: nothing here decodes the image.
    """
    check_key(body.key)
    if len(body.boxes) > config.max_boxes:
        raise ApiError(422, "invalid_boxes", f"{len(body.boxes)} boxes; the limit is {config.max_boxes}")
    if len(body.labels) > config.max_boxes:
        raise ApiError(422, "invalid_labels", f"{len(body.labels)} labels; the limit is {config.max_boxes}")
    for i, box in enumerate(body.boxes):
        if len(box) != 4:
            raise ApiError(422, "invalid_boxes", f"box {i} has {len(box)} numbers; a box is [x1, y1, x2, y2]")
    for i, label in enumerate(body.labels):
        if len(label) > config.max_label_chars:
            raise ApiError(422, "invalid_labels", f"label {i} has {len(label)} characters; the limit is "
                           f"{config.max_label_chars}")
    if len(body.description) > config.max_description_chars:
        raise ApiError(422, "invalid_description", f"description has {len(body.description)} characters; the "
                       f"limit is {config.max_description_chars}")
    _check_option_strings(body.options, "options", config.max_description_chars)
    size = len(json.dumps(body.options, separators=(",", ":")))
    if size > config.max_options_bytes:
        raise ApiError(422, "invalid_options", f"options take {size} bytes as JSON; the limit is "
                       f"{config.max_options_bytes} (max_options_bytes)")


def _check_option_strings(value: Any, where: str, limit: int, depth: int = 0) -> None:
    """Every string (and key) in an options value at most ``limit`` characters; nesting at most 8 deep."""
    if depth > 8:
        raise ApiError(422, "invalid_options", f"{where}: nested more than 8 levels deep")
    if isinstance(value, str):
        if len(value) > limit:
            raise ApiError(422, "invalid_options", f"{where}: a string of {len(value)} characters; the limit is "
                           f"{limit} (max_description_chars)")
    elif isinstance(value, dict):
        for k, v in value.items():
            if len(k) > limit:
                raise ApiError(422, "invalid_options", f"{where}: a key of {len(k)} characters; the limit is {limit}")
            _check_option_strings(v, f"{where}.{k}", limit, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_option_strings(v, f"{where}.{i}", limit, depth + 1)


def check_key(key: str) -> None:
    if not KEY_RE.fullmatch(key) or ".." in key:
        raise ApiError(422, "invalid_key",
                       "key must be 1-128 characters of letters, digits, '_', '.', ':' or '-', start with a letter "
                       "or digit, and contain no '..'")


def check_job_id(job_id: str) -> None:
    """Job ids are 32 hex digits; anything else (a path, a traversal) is refused before a lookup."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise ApiError(400, "invalid_id", "a job id is 32 lowercase hexadecimal digits")


def fingerprint(body: SubmissionBody) -> str:
    """What makes two submissions the same job (an idempotent retry must match it)."""
    canon = json.dumps(body.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def check_synthesizer(options: dict[str, Any], served: Collection[str], default: str) -> tuple[str, dict[str, Any]]:
    """The synthesizer a job names in ``options.synthesizer`` (else the default), and its other options."""
    opts = dict(options)
    name = opts.pop("synthesizer", default)
    if not isinstance(name, str) or name not in served:
        raise ApiError(422, "unknown_synthesizer",
                       f"this server has no synthesizer {name!r}; it serves: {', '.join(sorted(served))}")
    return name, opts


def allowed_options(model: Any) -> dict[str, Any]:
    """The options a synthesizer's model declares, each with its type and bounds (for error bodies and docs)."""
    props = model.model_json_schema().get("properties", {})
    keep = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "maxLength", "maxItems", "enum",
            "description")
    out = {}
    for name, spec in props.items():
        flat = dict(spec)
        for branch in spec.get("anyOf", []):  # ``int | None``: the bounds live in the non-null branch
            if branch.get("type") != "null":
                flat.update(branch)
        out[name] = {k: v for k, v in flat.items() if k in keep}
    return out


def check_job_options(synthesizer: str, options: dict[str, Any], model: Any) -> None:
    """Refuse options the synthesizer does not declare, or out of their declared range (422 + allowed)."""
    if model is None:
        return
    try:
        model.model_validate(options)
    except ValidationError as exc:
        parts = []
        for e in exc.errors()[:10]:
            loc = ".".join(str(p) for p in e["loc"]) or "(options)"
            msg = "unknown option" if e["type"] == "extra_forbidden" else e["msg"]
            parts.append(f"options.{loc}: {msg}")
        raise ApiError(422, "invalid_options", f"synthesizer {synthesizer!r}: " + "; ".join(parts),
                       details={"allowed": allowed_options(model)}) from None


def decode_image(data_b64: str, max_pixels: int, max_bytes: int) -> tuple[Image.Image, bytes]:
    """Decode and re-encode the image as PNG; refuse corrupt files and decompression bombs.

    The pixel count is read from the header and checked *before* any pixel is decoded, so a
    small file that would expand to gigabytes is refused without allocating them.
    """
    try:
        raw = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "bad_image", "image is not valid base64") from None
    if not raw:
        raise ApiError(422, "bad_image", "image is empty")
    if len(raw) > max_bytes:
        raise ApiError(413, "image_too_large", f"image file is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(raw))
            fmt = im.format
            w, h = im.size
            if fmt not in IMAGE_FORMATS:
                raise ApiError(422, "bad_image", f"image format {fmt} is not accepted; send PNG, JPEG or WebP")
            if w < 1 or h < 1:
                raise ApiError(422, "bad_image", "image has no pixels")
            if w * h > max_pixels:
                raise ApiError(413, "image_too_large",
                               f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} (decompression bomb?)")
            im.load()
            rgb = im.convert("RGB")
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApiError(413, "image_too_large", f"image refused as a decompression bomb: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt data
        raise ApiError(422, "bad_image", f"image bytes could not be decoded: {type(exc).__name__}: {exc}") from None
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=1)
    return rgb, buf.getvalue()


def check_boxes(boxes: list[list[float]], labels: list[str], width: int, height: int, config: ServerConfig) -> None:
    if not boxes:
        raise ApiError(422, "invalid_boxes", "at least one labelled box is needed (the foreground to keep)")
    if len(boxes) > config.max_boxes:
        raise ApiError(422, "invalid_boxes", f"{len(boxes)} boxes; the limit is {config.max_boxes}")
    if len(labels) != len(boxes):
        raise ApiError(422, "invalid_boxes", f"{len(boxes)} boxes but {len(labels)} labels; give one label per box")
    for i, (box, label) in enumerate(zip(boxes, labels, strict=True)):
        if len(box) != 4:
            raise ApiError(422, "invalid_boxes", f"box {i} has {len(box)} numbers; a box is [x1, y1, x2, y2]")
        if not all(math.isfinite(v) for v in box):
            raise ApiError(422, "invalid_boxes", f"box {i} {box} holds a non-finite number")
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            raise ApiError(422, "invalid_boxes", f"box {i} {box} is inverted or empty (need x1 < x2 and y1 < y2)")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ApiError(422, "invalid_boxes", f"box {i} {box} lies outside the {width}x{height} image")
        if not label.strip():
            raise ApiError(422, "invalid_labels", f"label {i} is empty")
        if len(label) > config.max_label_chars:
            raise ApiError(422, "invalid_labels", f"label {i} is longer than {config.max_label_chars} characters")


def check_description(description: str, config: ServerConfig) -> str:
    text = description.strip()
    if not text:
        raise ApiError(422, "invalid_description", "description is empty; say what the new image should show")
    if len(text) > config.max_description_chars:
        raise ApiError(422, "invalid_description",
                       f"description has {len(text)} characters; the limit is {config.max_description_chars}")
    return text


def validate_submission(body: SubmissionBody, config: ServerConfig,
                        option_models: dict[str, Any] | None = None) -> Submission:
    """Every check of a parsed body; decodes the image (CPU work: call it off the event loop).

    ``option_models`` maps a served synthesizer to the model of its per-job options (or ``None``).
    """
    check_bounds(body, config)
    served = config.served_synthesizers()
    synth, options = check_synthesizer(body.options, served, config.synthesizer)
    check_job_options(synth, options, (option_models or {}).get(synth))
    description = check_description(body.description, config)
    image, png = decode_image(body.image, config.max_image_pixels, config.max_request_bytes)
    check_boxes(body.boxes, body.labels, image.width, image.height, config)
    return Submission(
        key=body.key, fingerprint=fingerprint(body), image=image, png=png, boxes=[list(b) for b in body.boxes],
        labels=list(body.labels), description=description, synthesizer=synth, options=options, seed=body.seed,
    )
