"""Bring a trained version from another installation (or any peft LoRA adapter) into this
registry: ``assistant models import FOLDER``.

A team trains where the GPUs are (``accelerate launch``, another data folder) and serves
here; or it judges one installation's policy with another's reward model. The folder is a
version folder (``versions/<name>/`` of another data folder: ``adapter/`` and, since
versions describe themselves, ``version.json``) or a bare adapter folder
(``adapter_config.json`` and ``adapter_model.safetensors``).

Checked before anything is registered: the adapter loads onto this installation's base
model (peft refuses weights whose shapes do not fit), and a described version was trained on
the same base (its fingerprint). The imported version starts a new lineage on ``base`` (the
source's parent is a name in another registry) unless ``--parent`` names a local one; where
it came from is kept in its data record.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from assistant.errors import AssistantError
from assistant.engines.models import LoadedModel
from alignment.training_kinds import VERSION_KINDS
from assistant.registry import VERSION_FILE, Registry, Version
from assistant.versions import BASE_VERSION, JUDGE_KINDS

#: Files of a version folder that are copied besides ``adapter/`` (when present).
_EXTRAS = ("data", "curve.png", "log_history.json")
#: Made for another base path: converted again here.
_NOT_COPIED = ("adapter_model.gguf", "adapter_model.gguf.json", "ref")


class ImportRefused(AssistantError):
    """The folder cannot become a version here; nothing was registered."""


def describe_source(source: Path, kind: str | None = None) -> tuple[Path, dict[str, Any], str]:
    """The adapter folder inside ``source``, its ``version.json`` (empty if none) and its
    kind (``kind``, or what the folder says): what can be checked without the model."""
    source = Path(source)
    if not source.is_dir():
        raise ImportRefused(f"{source} is not a folder: name a version folder "
                            "(another data folder's versions/<name>) or a LoRA adapter folder.")
    adapter = source / "adapter" if (source / "adapter").is_dir() else source
    weights = [adapter / n for n in ("adapter_model.safetensors", "adapter_model.bin")]
    if not (adapter / "adapter_config.json").is_file() or not any(p.is_file() for p in weights):
        raise ImportRefused(
            f"{source} holds no LoRA adapter (adapter_config.json and adapter_model.safetensors, "
            "in the folder or in its adapter/): nothing to import.")
    meta: dict[str, Any] = {}
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
        if (source / VERSION_FILE).is_file():
            meta = json.loads((source / VERSION_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ImportRefused(f"{source}: a JSON file is not readable ({err}).") from err
    if meta.get("kind") and kind and meta["kind"] != kind:
        raise ImportRefused(f"{source} is a {meta['kind']} version, not {kind}.")
    kind = kind or meta.get("kind")
    if kind not in VERSION_KINDS:
        raise ImportRefused(
            f"{source} does not say what kind of version it is: pass --kind "
            f"({', '.join(VERSION_KINDS)}).")
    # A reward model's or answerability head's adapter carries its one-output head (peft's
    # modules_to_save "score").
    has_head = "score" in (config.get("modules_to_save") or [])
    if has_head and kind not in JUDGE_KINDS:
        raise ImportRefused(f"{source} holds a reward model's adapter (it has a score head), "
                            f"not a {kind} policy: pass --kind reward.")
    if kind in JUDGE_KINDS and not has_head:
        raise ImportRefused(f"{source} holds a policy adapter (it has no score head), "
                            f"not a {kind} version.")
    return adapter, meta, kind


def import_version(registry: Registry, source: Path, loaded: LoadedModel, *,
                   kind: str | None = None, parent: str = BASE_VERSION) -> Version:
    """Copy ``source`` into a staging folder, check that its adapter fits ``loaded``'s
    model, and register it. Raises :class:`ImportRefused` with what to do."""
    adapter, meta, kind = describe_source(source, kind)
    if meta.get("base_fingerprint") and meta["base_fingerprint"] != loaded.fingerprint:
        raise ImportRefused(
            f"{source} was trained on another base model ({meta.get('base_model')}); this "
            f"installation's is {loaded.model_id}. Set ASSISTANT_MODEL to the same base.")
    parent_version = registry.get(parent)  # an unknown name lists the known ones
    if kind in JUDGE_KINDS and not parent_version.is_base:
        raise ImportRefused(f"A {kind} version starts from the base model: leave out --parent.")
    staging = registry.staging_dir()
    try:
        shutil.copytree(adapter, staging / "adapter", ignore=shutil.ignore_patterns(*_NOT_COPIED))
        if adapter != Path(source):
            for name in _EXTRAS:
                path = Path(source) / name
                if path.is_dir():
                    shutil.copytree(path, staging / name)
                elif path.is_file():
                    shutil.copy2(path, staging / name)
        _check_fits(staging / "adapter", kind, loaded, source)
        data = dict(meta.get("data") or {})
        data.setdefault("kind", "imported")
        data.setdefault("train_rows", 0)
        data.setdefault("test_rows", 0)
        data.setdefault("sha256", "")
        data["imported_from"] = {
            "folder": str(Path(source).resolve()), "name": meta.get("name"),
            "parent": meta.get("parent"), "base_model": meta.get("base_model"),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return registry.register(
            staging, kind=kind, base_model=loaded.model_id, base_fingerprint=loaded.fingerprint,
            parent=parent_version.name, data=data, config=dict(meta.get("config") or {}),
            metrics=dict(meta.get("metrics") or {}),
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_fits(adapter: Path, kind: str, loaded: LoadedModel, source: Path) -> None:
    """Load the adapter onto a copy of the base model: peft refuses mismatched shapes."""
    import copy

    from peft import PeftModel

    try:
        if kind in JUDGE_KINDS:
            from assistant.engines.models import load_sequence_classifier

            model = load_sequence_classifier(loaded)
        else:
            model = copy.deepcopy(loaded.model)
        PeftModel.from_pretrained(model, str(adapter))
    except Exception as err:  # noqa: BLE001 - peft/torch raise many kinds; all mean "does not fit"
        what = f"a {kind} version's adapter" if kind in JUDGE_KINDS else f"a {kind} policy's adapter"
        first = (str(err).splitlines() or [""])[0][:300]
        raise ImportRefused(
            f"The adapter in {source} does not fit the base model {loaded.model_id} "
            f"({type(err).__name__}: {first}). It was trained on another base model, or it "
            f"is not {what}.") from None
