"""The model contract: one typed record of what a model was trained on, from training to every answer.

Training writes it next to the adapter or model (``megc_vqa_train.json``); the answering engine loads it
once (:func:`read_contract`) and every consumer (validation during training, ``eval/run_vqa.py``,
``megc-vqa ask``, ``eval/run_str.py``, ``eval/run_lvqa.py``, the vLLM backend) takes its prompt layout,
visual sampler settings, pixel bounds and label sets from there. An explicit option may replace one
setting (:meth:`ModelContract.override`): the change is logged as a warning and kept in
:attr:`ModelContract.overrides`, so a run summary (:meth:`ModelContract.summary`) says what was used.

A folder without the record (a plain hub checkpoint) gets the defaults, said once in the log. A record
written by another project version with a key this version does not know is refused with a message that
names the key.

    contract = read_contract(adapter_dir, model_dir)          # or ModelContract() for the defaults
    contract = contract.override(spec="uniform:8+flow")       # warns, recorded
    visual = contract.sample(clip)                            # VisualInputs as training saw them
    contract.write(out_dir)                                   # training
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from megc_vqa import __version__
from megc_vqa.errors import MegcError
from megc_vqa.face_settings import FaceSettings
from megc_vqa.fileio import atomic_write_text, read_json_bytes
from megc_vqa.labels import AU_NAMES_IN_ORDER, COARSE_CLASSES, TRAINING_FINE_LABELS
from megc_vqa.models.prompting import VISUAL_MODES, PromptOptions
from megc_vqa.visual.spec import APEX_METHODS, FLOW_METHODS, parse_sampler

log = logging.getLogger(__name__)

RECORD_NAME = "megc_vqa_train.json"
# Version of the record's layout; bump when a key changes meaning (``from_json`` migrates older ones).
# 3: ``visual.face_crop`` became the face pipeline's ``face``/``face_margin``/``face_detector``/``register``/
# ``magnify`` (``face_crop: true`` is ``face: box``, the Haar box grown 15%, as it was trained).
FORMAT_VERSION = 3
# annotated: the dataset's apex where it has one (estimated where not, e.g. SMIC);
# estimated: always the motion estimator, as at test time; mix: per clip, half and half (stable by clip).
APEX_POLICIES: tuple[str, ...] = ("annotated", "estimated", "mix")

_SAID: set[tuple[str, ...]] = set()  # folders whose missing record was already logged


class ContractError(MegcError, ValueError):
    """A training record that cannot be used; the message names the file and key."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ContractError(message)


@dataclass(frozen=True)
class VisualContract:
    """How a clip becomes visual inputs (``megc_vqa.visual.samplers.sample`` arguments).

    spec: sampler spec (``oao+flow``, ``uniform:8+flow``, ...).
    size: shorter side in pixels after resizing, ``None`` for native size.
    face_crop: the earlier switch, accepted when building one: ``True`` is ``face: box``. Not a field.
    flow_method: ``farneback`` or ``tvl1``.
    apex_policy: which apex training used (see ``APEX_POLICIES``); answering always estimates the apex of
        a clip that has none, with ``apex_method``, exactly as ``estimated`` does in training.
    apex_method: the estimator (``motion``: largest motion against the onset; ``midpoint``).
    face, face_margin, face_detector, register, magnify: the face pipeline
        (:class:`megc_vqa.visual.face.FaceSettings`: ``none``/``box``/``crop``/``align``, margin, ``auto``/
        ``dlib``/``haar``, registration to the onset, motion magnification factor, 1 = off).
    """

    spec: str = "oao+flow"
    size: int | None = 224
    face_crop: InitVar[bool | None] = None
    flow_method: str = "farneback"
    apex_policy: str = "annotated"
    apex_method: str = "motion"
    face: str = "none"
    face_margin: float = 0.15
    face_detector: str = "auto"
    register: bool = False
    magnify: float = 1.0

    def __post_init__(self, face_crop: bool | None) -> None:
        if face_crop and self.face == "none":
            legacy = FaceSettings.legacy(True)
            object.__setattr__(self, "face", legacy.face)
            object.__setattr__(self, "face_margin", legacy.margin)
            object.__setattr__(self, "face_detector", legacy.detector)
        try:
            settings = self.face_settings()
        except ValueError as err:
            raise ContractError(f"visual.{err}") from None
        object.__setattr__(self, "face_margin", settings.margin)
        object.__setattr__(self, "magnify", settings.magnify)
        try:
            object.__setattr__(self, "spec", str(parse_sampler(self.spec)))  # one spelling per spec
        except ValueError as err:
            raise ContractError(f"visual.spec: {err}") from None
        _check(
            self.size is None or (isinstance(self.size, int) and self.size >= 1),
            f"visual.size must be a positive number of pixels or null, got {self.size!r}",
        )
        _check(self.flow_method in FLOW_METHODS, f"visual.flow_method must be one of {FLOW_METHODS}")
        _check(self.apex_policy in APEX_POLICIES, f"visual.apex_policy must be one of {APEX_POLICIES}")
        _check(self.apex_method in APEX_METHODS, f"visual.apex_method must be one of {APEX_METHODS}")

    def face_settings(self) -> FaceSettings:
        """The face pipeline's switches as the visual layer takes them."""
        return FaceSettings(self.face, self.face_margin, self.face_detector, self.register, self.magnify)

    def fingerprint(self) -> dict[str, Any]:
        """The sampler settings as plain JSON values (run fingerprints). With the face pipeline off, or the
        earlier box, it reads as before the pipeline existed (``face_crop``), so earlier runs still resume."""
        kwargs = self.sample_kwargs()
        face = kwargs.pop("face")
        if face in (FaceSettings(), FaceSettings.legacy(True)):
            return {**kwargs, "face_crop": face.face == "box"}
        return {**kwargs, **face.key()}

    def sample_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``megc_vqa.visual.samplers.sample`` (besides the clip and cache)."""
        return {
            "spec": self.spec,
            "size": self.size,
            "face": self.face_settings(),
            "flow_method": self.flow_method,
            "apex_method": self.apex_method,
        }


@dataclass(frozen=True)
class LabelContract:
    """The label sets answers are drawn from (constrained decoding and normalisation)."""

    coarse: tuple[str, ...] = COARSE_CLASSES
    fine: tuple[str, ...] = TRAINING_FINE_LABELS
    au_names: tuple[str, ...] = AU_NAMES_IN_ORDER

    def __post_init__(self) -> None:
        for name in ("coarse", "fine", "au_names"):
            values = tuple(str(v) for v in getattr(self, name))
            _check(bool(values), f"labels.{name} is empty")
            _check(len(set(values)) == len(values), f"labels.{name} repeats a label")
            object.__setattr__(self, name, values)


@dataclass(frozen=True)
class ModelContract:
    """What a model was trained on; see the module docstring.

    prompt: prompt layout and pixel bounds (``megc_vqa.models.prompting.PromptOptions``).
    visual: visual sampler settings (:class:`VisualContract`).
    labels: label vocabularies (:class:`LabelContract`).
    model_name_or_path, family, use_peft, blank_pixels, val_subjects, recipe, merged_from: provenance.
    project_version: the megc-vqa version that wrote the record.
    source: the file it was read from (``None``: defaults); not written.
    overrides: ``(key, recorded, used)`` for each setting an explicit option replaced; not written.
    """

    prompt: PromptOptions = field(default_factory=PromptOptions)
    visual: VisualContract = field(default_factory=VisualContract)
    labels: LabelContract = field(default_factory=LabelContract)
    model_name_or_path: str | None = None
    family: str | None = None
    use_peft: bool | None = None
    blank_pixels: bool = False
    val_subjects: tuple[str, ...] = ()
    recipe: str | None = None
    merged_from: str | None = None
    project_version: str = __version__
    source: str | None = field(default=None, compare=False)
    overrides: tuple[tuple[str, Any, Any], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        p = self.prompt
        _check(p.visual_mode in VISUAL_MODES, f"prompt.visual_mode must be one of {VISUAL_MODES}")
        for key in ("min_pixels", "max_pixels"):
            value = getattr(p, key)
            _check(value is None or (isinstance(value, int) and value > 0), f"prompt.{key} must be > 0")
        if p.min_pixels is not None and p.max_pixels is not None:
            _check(p.min_pixels <= p.max_pixels, "prompt.min_pixels is above prompt.max_pixels")
        object.__setattr__(self, "val_subjects", tuple(str(s) for s in self.val_subjects))

    # -- JSON ---------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "project_version": self.project_version,
            "model_name_or_path": self.model_name_or_path,
            "family": self.family,
            "use_peft": self.use_peft,
            "prompt": asdict(self.prompt),
            "visual": asdict(self.visual),
            "labels": {k: list(v) for k, v in asdict(self.labels).items()},
            "blank_pixels": self.blank_pixels,
            "val_subjects": list(self.val_subjects),
            "recipe": self.recipe,
            "merged_from": self.merged_from,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str | Path | None = None) -> ModelContract:
        """Parse a record; ``ContractError`` names the file and the key it cannot use."""
        where = str(source) if source else "training record"
        if not isinstance(data, Mapping):
            raise ContractError(f"{where}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format_version", 1)
        written_by = data.get("project_version", "before 0.1.0")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ContractError(
                f"{where}: key 'format_version' is {version!r}, newer than this megc-vqa {__version__} "
                f"reads (format {FORMAT_VERSION}; the record was written by megc-vqa {written_by}). "
                "Upgrade megc-vqa, or retrain with this version."
            )
        if version == 1:  # the first layout: runtime cache settings sat in "visual"
            visual = dict(data.get("visual") or {})
            for runtime in ("cache_dir", "memory_cache"):
                visual.pop(runtime, None)
            data["visual"] = visual
        if version <= 2 and isinstance(data.get("visual"), Mapping):
            # face_crop: true was the Haar box grown 15%: face: box gives that same crop
            visual = dict(data["visual"])
            if visual.pop("face_crop", False):
                legacy = FaceSettings.legacy(True)
                visual.update(face=legacy.face, face_margin=legacy.margin, face_detector=legacy.detector)
            data["visual"] = visual
        nested = {"prompt": PromptOptions, "visual": VisualContract, "labels": LabelContract}
        known = {f.name for f in fields(cls) if f.name not in ("source", "overrides")}
        for key in data:
            if key not in known:
                raise ContractError(
                    f"{where}: unknown key {key!r} (record written by megc-vqa {written_by}, format "
                    f"{version}; this is megc-vqa {__version__}, format {FORMAT_VERSION}). Retrain, or "
                    f"remove the key if you know it does not change the prompts or inputs."
                )
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in nested:
                if not isinstance(value, Mapping):
                    raise ContractError(f"{where}: key {key!r} must be an object, got {value!r}")
                allowed = {f.name for f in fields(nested[key])}
                bad = sorted(set(value) - allowed)
                if bad:
                    raise ContractError(
                        f"{where}: unknown key '{key}.{bad[0]}' (record written by megc-vqa {written_by}; "
                        f"this megc-vqa {__version__} knows {', '.join(sorted(allowed))})"
                    )
                try:
                    values[key] = nested[key](**value)
                except ContractError as err:
                    raise ContractError(f"{where}: {err}") from None
                except TypeError as err:
                    raise ContractError(f"{where}: key {key!r}: {err}") from None
            elif value is not None:
                values[key] = value
        try:
            return cls(**values, source=str(source) if source else None)
        except ContractError as err:
            raise ContractError(f"{where}: {err}") from None

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/megc_vqa_train.json`` atomically; returns its path."""
        return atomic_write_text(Path(folder) / RECORD_NAME, json.dumps(self.to_json(), indent=2) + "\n")

    # -- use ----------------------------------------------------------------------------------------

    def override(self, **changes: Any) -> ModelContract:
        """A copy with explicit options applied: visual keys (``spec``, ``size``, ``face``, ``face_margin``,
        ``face_detector``, ``register``, ``magnify``, ``flow_method``, ``apex_method``; the earlier
        ``face_crop`` is ``face: box``/``none``) or prompt keys (``visual_mode``, ``min_pixels``, ...). ``None``
        values are ignored; a value that differs from the record is logged as a warning and recorded."""
        visual_keys = {f.name for f in fields(VisualContract)}
        prompt_keys = {f.name for f in fields(PromptOptions)}
        visual, prompt, done = {}, {}, list(self.overrides)
        face_crop = changes.pop("face_crop", None)
        if face_crop is not None and changes.get("face") is None:  # the earlier switch: box or none
            changes["face"] = "box" if face_crop else "none"
        for key, value in changes.items():
            if value is None:
                continue
            if key in visual_keys:
                recorded, target = getattr(self.visual, key), visual
            elif key in prompt_keys:
                recorded, target = getattr(self.prompt, key), prompt
            else:
                raise ContractError(f"cannot override {key!r}: not a visual or prompt setting")
            if key == "spec":
                try:
                    value = str(parse_sampler(value))
                except ValueError as err:
                    raise ContractError(f"visual spec: {err}") from None
            if value == recorded:
                continue
            target[key] = value
            done.append((key, recorded, value))
            log.warning(
                "explicit option %s=%r overrides %r (%s); recorded in the run summary",
                key, value, recorded, f"trained with, {self.source}" if self.source else "the default",
            )  # fmt: skip
        if not visual and not prompt:
            return self
        try:
            new_visual = replace(self.visual, **visual)
        except ContractError as err:
            raise ContractError(f"explicit option: {err}") from None
        return replace(
            self,
            visual=new_visual,
            prompt=replace(self.prompt, **prompt),
            overrides=tuple(done),
        )

    def sample(self, clip: Any, cache_dir: str | Path | None = None, root: Path | None = None) -> Any:
        """The clip's ``VisualInputs`` with these settings (an apex the clip lacks is estimated)."""
        from megc_vqa.visual.samplers import sample  # OpenCV: the record is read where no frame is decoded

        return sample(
            clip, cache_dir=Path(cache_dir) if cache_dir else None, root=root, **self.visual.sample_kwargs()
        )

    def summary(self) -> dict[str, Any]:
        """The settings actually used, for run summaries: record file, prompt, visual, labels, overrides."""
        return {
            "record": self.source or "none (defaults)",
            "trained_by": self.project_version if self.source else None,
            "prompt": asdict(self.prompt),
            "visual": asdict(self.visual),
            "labels": {k: len(v) for k, v in asdict(self.labels).items()},
            "overrides": [{"key": k, "recorded": r, "used": u} for k, r, u in self.overrides],
        }


def find_record(*folders: str | Path | None) -> Path | None:
    """The first ``megc_vqa_train.json`` in ``folders`` (adapter first, then model), else ``None``."""
    for folder in folders:
        if folder and (Path(folder) / RECORD_NAME).is_file():
            return (Path(folder) / RECORD_NAME).absolute()  # summaries name it unambiguously
    return None


def read_contract(*folders: str | Path | None) -> ModelContract:
    """The record of the first folder that has one; the defaults (said once in the log) otherwise."""
    path = find_record(*folders)
    if path is None:
        key = tuple(str(f) for f in folders if f)
        if key not in _SAID:
            _SAID.add(key)
            log.info(
                "no %s in %s: default prompt and visual settings (%s at %s px, face pipeline off)",
                RECORD_NAME, ", ".join(key) or "the model", VisualContract.spec, VisualContract.size,
            )  # fmt: skip
        return ModelContract()
    try:
        data = json.loads(read_json_bytes(path, "training record").decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ContractError(f"{path}: not a readable JSON training record ({err})") from None
    return ModelContract.from_json(data, source=path)
