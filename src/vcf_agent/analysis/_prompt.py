"""The versioned prompt sent to LLM providers and the validation of what comes back.

The version is part of every cache key and every result, so changing the
wording (or the answer schema) must bump PROMPT_VERSION: answers to an older
prompt are then never served for the new one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from vcf_agent.schema import CLASSIFICATIONS
from vcf_agent.v1 import analysis_pb2, variant_pb2

# 2: classification vocabulary uncertain_significance/not_classified; population AF only from
# population databases, with its source, ClinVar review status and the ACMG criteria assessed.
PROMPT_VERSION = "acmg-json/2"

_MAX_CRITERIA = 28
_MAX_CRITERION = 300
_MAX_RATIONALE = 4000

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["classification", "criteria", "rationale", "confidence"],
    "properties": {
        "classification": {"type": "string", "enum": list(CLASSIFICATIONS)},
        "criteria": {"type": "array", "items": {"type": "string"}, "maxItems": _MAX_CRITERIA},
        "rationale": {"type": "string", "minLength": 1, "maxLength": _MAX_RATIONALE},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

SYSTEM_PROMPT = (
    "You are a clinical variant interpretation assistant applying the ACMG/AMP 2015 guidelines. "
    "You receive one genomic variant with the evidence an offline annotator derived from the VCF. "
    "Use only that evidence and well-established gene-disease knowledge; when evidence is insufficient, "
    "answer uncertain. Reply with a single JSON object and nothing else, matching this JSON schema: "
    + json.dumps(ANSWER_SCHEMA, separators=(",", ":"))
    + '. criteria lists ACMG codes with a short justification each, e.g. "PM2: absent from gnomAD".'
)


class MalformedAnswer(ValueError):
    """The model replied, but not with an answer matching the schema."""


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    user: str
    version: str = PROMPT_VERSION


@dataclass(frozen=True, slots=True)
class Answer:
    classification: str
    confidence: float
    criteria: tuple[str, ...]
    rationale: str


def build_prompt(variant: variant_pb2.VariantMessage, annotation: analysis_pb2.LocalAnnotation) -> Prompt:
    """The variant and its local annotation as compact JSON facts; identical inputs give identical text."""
    facts: dict[str, Any] = {
        "variant": f"{variant.chromosome}:{variant.position} {variant.reference}>{variant.alternate}",
        "all_alternates": list(variant.all_alternates),
        "id": variant.id or None,
        "class": annotation.variant_class,
        "sv_type": annotation.sv_type or None,
        "substitution": annotation.substitution or None,
        "gene": annotation.gene or None,
        "overlapping_genes": list(annotation.overlapping_genes) or None,
        "consequence": annotation.consequence or None,
        "impact": annotation.impact or None,
        "hgvs_c": annotation.hgvs_c or None,
        "hgvs_p": annotation.hgvs_p or None,
        "population_af": annotation.population_af if annotation.population_af >= 0 else None,
        "population_af_source": annotation.population_af_source or None,
        "frequency_tier": annotation.frequency_tier,
        "clinvar": annotation.clinvar_significance or None,
        "clinvar_review_status": annotation.clinvar_review_status or None,
        "clinvar_conflicts": annotation.clinvar_conflicts or None,
        "acmg_criteria": [_criterion(c) for c in annotation.acmg_criteria] or None,
        "quality_tier": annotation.quality_tier,
        "filters": list(variant.filters) or None,
        "zygosity": sorted({s.zygosity for s in annotation.samples if s.zygosity}) or None,
        "priority": annotation.priority_tier,
        "priority_reasons": list(annotation.priority_reasons) or None,
    }
    compact = {k: v for k, v in facts.items() if v is not None}
    user = "Classify this variant.\nEvidence (JSON): " + json.dumps(compact, sort_keys=True)
    return Prompt(SYSTEM_PROMPT, user)


def _criterion(criterion: analysis_pb2.AcmgCriterion) -> str:
    state = "met" if criterion.met else "not met"
    return f"{criterion.code} ({state}): {criterion.source}={criterion.value}"


def parse_answer(text: str) -> Answer:
    """The validated answer in `text`; raises MalformedAnswer saying what is wrong."""
    body = _strip_fence(text)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedAnswer(f"answer is not JSON: {exc.msg} at {exc.pos}") from exc
    if not isinstance(data, dict):
        raise MalformedAnswer(f"answer must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ANSWER_SCHEMA["required"] if k not in data]
    if missing:
        raise MalformedAnswer(f"answer lacks {', '.join(missing)}")
    classification = data["classification"]
    if not isinstance(classification, str):
        raise MalformedAnswer("classification must be a string")
    # Models write "Likely pathogenic" or "likely-benign" as often as the enum value.
    normalised = classification.strip().lower().replace("-", "_").replace(" ", "_")
    if normalised in ("uncertain", "vus"):
        normalised = "uncertain_significance"
    if normalised not in CLASSIFICATIONS:
        raise MalformedAnswer(f"classification {classification!r} is not one of {', '.join(CLASSIFICATIONS)}")
    confidence = data["confidence"]
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not math.isfinite(confidence)
    ):
        raise MalformedAnswer("confidence must be a number")
    if not 0 <= confidence <= 1:
        raise MalformedAnswer(f"confidence {confidence} is outside 0..1")
    criteria = data["criteria"]
    if not isinstance(criteria, list) or not all(isinstance(c, str) for c in criteria):
        raise MalformedAnswer("criteria must be a list of strings")
    if len(criteria) > _MAX_CRITERIA or any(len(c) > _MAX_CRITERION for c in criteria):
        raise MalformedAnswer("criteria list too long")
    rationale = data["rationale"]
    if not isinstance(rationale, str) or not rationale.strip():
        raise MalformedAnswer("rationale must be a non-empty string")
    if len(rationale) > _MAX_RATIONALE:
        raise MalformedAnswer("rationale too long")
    return Answer(normalised, float(confidence), tuple(c.strip() for c in criteria), rationale.strip())


def _strip_fence(text: str) -> str:
    """Drop a ```json ... ``` fence, which chat models add even when told not to."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped.strip()
