"""The label registry: the 98 findings, their names, superset classes and vocabularies.

The registry lives in one YAML file (``labels/findings.yaml``). Its finding order is
the multi-hot index order, so it is validated strictly on load and identified by a content
hash that checkpoints can record. See ``docs/registry.md`` for the schema and the clinical
decisions behind the mappings.

The registry's languages (``LANGUAGES``) are the languages of every command: ``parse_languages``
and ``parse_language`` read a ``--lang`` value, and the words ecgtool prints in each language
beside the registry's names (present / absent, the column header, the name separator, the
report line when nothing is present) are kept here with them.

Examples
--------
>>> registry = load_registry()
>>> registry.prompt(["complete_right_bundle_branch_block", "sinus_tachycardia"], "ja")
'この心電図は洞性頻脈、完全右脚ブロックを示す。'
>>> registry.codes_to_findings("scp", "CRBBB")
('complete_right_bundle_branch_block',)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from ecgtool.errors import EcgToolError
from ecgtool.exclusions import ExclusionRules, parse_exclusions

__all__ = [
    "BOTH",
    "CALL_WORDS",
    "FINDING_HEADER",
    "FINDING_COUNT",
    "LANGUAGES",
    "NAME_SEPARATOR",
    "NOTHING_PRESENT",
    "Finding",
    "LanguageError",
    "PromptTemplate",
    "Registry",
    "RegistryError",
    "SupersetClass",
    "Vocabulary",
    "load_registry",
    "normalize_term",
    "parse_language",
    "parse_languages",
]

FINDING_COUNT = 98
LANGUAGES = ("ja", "en")
BOTH = "both"  # every language of LANGUAGES, where a command can use several
PLACEHOLDER = "{findings}"

# What ecgtool prints in each language beside the registry's own names and templates.
NOTHING_PRESENT = {
    "ja": "この心電図に、判定基準を満たす所見はない。",
    "en": "This ECG shows no finding above its operating point.",
}
CALL_WORDS = {"ja": {True: "あり", False: "なし", None: "判定なし"}, "en": {True: "present", False: "absent", None: "not called"}}
FINDING_HEADER = {"ja": "所見", "en": "finding"}
# The measurement line above the findings, as an ECG machine prints it ("–": not measurable).
MEASUREMENT_LINE = {
    "ja": "心拍数 {hr}/分 PR {pr}ms QRS {qrs}ms QT/QTc {qt}/{qtc}ms 電気軸 P/QRS/T {p}/{axis}/{t}°",
    "en": "HR {hr} bpm  PR {pr} ms  QRS {qrs} ms  QT/QTc {qt}/{qtc} ms  Axes P/QRS/T {p}/{axis}/{t}°",
}
# Marks a call its measurement made (no model operating point), with the footnote saying so.
MEASURED_MARK = "†"
MEASURED_NOTE = {"ja": "†: 計測値による判定: {finding}（{values}）", "en": "†: decided by the measurement: {finding} ({threshold}: {values})"}
# Marks a call that read the model's score and the measurement together (ecgtool.combined_calibration).
COMBINED_MARK = "‡"
COMBINED_NOTE = {"ja": "‡: 心電図モデルと計測値による判定: {findings}", "en": "‡: the model's score and the measurement together: {findings}"}
# A finding above its operating point that an exclusive, more probable one keeps off the report.
EXCLUDED_WORD = {"ja": "除外", "en": "excluded"}
EXCLUDED_BY = {"ja": "除外: {excluded}（{winner}を優先）", "en": "excluded: {excluded} (exclusive with {winner}, which is more probable)"}
NAME_SEPARATOR = {"ja": "、", "en": ", "}

_ID_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_SEMVER_PATTERN = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_TOP_LEVEL_KEYS = ("version", "templates", "supersets", "findings", "vocabularies")
# Optional sections that are reading rules, not label definitions: left out of the content hash,
# so that adding or changing one does not orphan stores, text caches and models.
_READING_RULE_KEYS = ("exclusions",)
_FINDING_KEYS = ("id", "en", "ja", "synonyms", "supersets")

# NFKC leaves these alone, yet reports use them interchangeably with ' and -.
_PUNCTUATION_VARIANTS = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u2032": "'",
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-",
    }
)
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
_ORDINARY_WORD = re.compile(r"[A-Za-z][a-z]{2,}")
_STATEMENT_SEPARATORS = frozenset(".,;:!?/()[]、。・\n")


class RegistryError(ValueError):
    """A registry file that cannot be used, located as ``<path>:<line>: <what is wrong>``.

    Attributes
    ----------
    path : pathlib.Path
        The registry file.
    line : int or None
        1-based line of the offending YAML node, or None when the file cannot be read.
    problem : str
        What is wrong, without the location.
    """

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        location = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{location}: {problem}")


class LanguageError(EcgToolError):
    """A ``--lang`` value that names no language of the registry."""


def parse_languages(value: str) -> tuple[str, ...]:
    """The languages a ``--lang`` value names: one of ``LANGUAGES``, or all of them for ``both``."""
    if value == BOTH:
        return LANGUAGES
    if value in LANGUAGES:
        return (value,)
    raise LanguageError(f"--lang {value}: expected {', '.join(LANGUAGES)} or {BOTH}")


def parse_language(value: str) -> str:
    """A ``--lang`` value that must name one language (a reading is printed in one)."""
    if value not in LANGUAGES:
        raise LanguageError(f"--lang {value}: expected {' or '.join(LANGUAGES)}")
    return value


@dataclass(frozen=True)
class SupersetClass:
    """One class of a superset test (for example ``rhythm`` / ``sinus_rhythm``)."""

    id: str
    en: str
    ja: str

    def name(self, lang: str) -> str:
        """Return the class name in ``lang`` ("ja" or "en")."""
        return getattr(self, _checked_language(lang))


@dataclass(frozen=True)
class Finding:
    """One finding of the registry.

    Attributes
    ----------
    id : str
        Stable ASCII snake_case identifier derived from the English name.
    index : int
        Position in the multi-hot vector (registry order).
    en, ja : str
        English name as published in the paper's Table 9; Japanese device statement.
    synonyms_en, synonyms_ja : tuple of str
        Other spellings and abbreviations, unambiguous across the registry.
    supersets : Mapping[str, tuple of str]
        Superset test id -> ids of the classes this finding belongs to. Tests where the
        finding belongs to no class are absent.
    """

    id: str
    index: int
    en: str
    ja: str
    synonyms_en: tuple[str, ...]
    synonyms_ja: tuple[str, ...]
    supersets: Mapping[str, tuple[str, ...]] = field(hash=False)

    def name(self, lang: str) -> str:
        """Return the finding name in ``lang`` ("ja" or "en")."""
        return getattr(self, _checked_language(lang))


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with a ``{findings}`` slot and the string that joins several names."""

    prompt: str
    joiner: str

    def fill(self, names: Iterable[str]) -> str:
        """Join ``names`` and put them in the slot (``str.format`` is avoided on purpose:
        a literal brace in a prompt must not break it)."""
        return self.prompt.replace(PLACEHOLDER, self.joiner.join(names))


@dataclass(frozen=True)
class Vocabulary:
    """Codes of one public label set and the findings each stands for.

    Attributes
    ----------
    name : str
        Vocabulary id ("scp", "snomed", "cpsc").
    mapped : Mapping[str, tuple of str]
        Code as written in the registry -> finding ids in registry order.
    unmapped : Mapping[str, str]
        Code as written in the registry -> why it has no counterpart.
    """

    name: str
    mapped: Mapping[str, tuple[str, ...]] = field(hash=False)
    unmapped: Mapping[str, str] = field(hash=False)
    _by_code: Mapping[str, tuple[str, ...]] = field(hash=False, repr=False, compare=False)

    def findings_for(self, code: str) -> tuple[str, ...] | None:
        """Return the finding ids of ``code``: empty for a known unmapped code, None for a
        code the registry has never heard of. Surrounding blanks and case are ignored."""
        return self._by_code.get(_normalize_code(code))


@dataclass(frozen=True)
class _Term:
    """A searchable name of one finding, ready for free-text extraction."""

    text: str
    finding_index: int
    pattern: re.Pattern[str]
    whole_statement: bool


@dataclass(frozen=True)
class Registry:
    """The validated label registry. Obtain one with :func:`load_registry`.

    Attributes
    ----------
    version : str
        Semantic version written in the file.
    hash : str
        First 16 hex characters of the SHA-256 of the canonical JSON form of the parsed
        file: comments and layout do not change it, any content change does.
    path : pathlib.Path
        The file it was read from.
    findings : tuple of Finding
        In registry (multi-hot index) order.
    supersets : Mapping[str, tuple of SupersetClass]
        Superset test id -> its classes in order.
    superset_names : Mapping[str, SupersetClass]
        Superset test id -> the test's own id and names.
    templates : Mapping[str, PromptTemplate]
        Language -> prompt template.
    vocabularies : Mapping[str, Vocabulary]
        Vocabulary id -> code mappings.
    exclusions : ExclusionRules
        Which findings are never called together (``ecgtool.exclusions``).
    """

    version: str
    hash: str
    path: Path
    findings: tuple[Finding, ...]
    supersets: Mapping[str, tuple[SupersetClass, ...]] = field(hash=False)
    superset_names: Mapping[str, SupersetClass] = field(hash=False, repr=False)
    templates: Mapping[str, PromptTemplate] = field(hash=False, repr=False)
    vocabularies: Mapping[str, Vocabulary] = field(hash=False, repr=False)
    exclusions: ExclusionRules = field(hash=False, repr=False, compare=False)
    _index_by_id: Mapping[str, int] = field(hash=False, repr=False, compare=False)
    _index_by_term: Mapping[str, int] = field(hash=False, repr=False, compare=False)
    _terms: tuple[_Term, ...] = field(hash=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.findings)

    def ids(self) -> tuple[str, ...]:
        """Return all finding ids in registry order."""
        return tuple(finding.id for finding in self.findings)

    def finding(self, finding_id: str) -> Finding:
        """Return the finding with id ``finding_id``.

        Raises
        ------
        KeyError
            If no finding has that id.
        """
        return self.findings[self.index(finding_id)]

    def index(self, finding_id: str) -> int:
        """Return the multi-hot position of ``finding_id``.

        Raises
        ------
        KeyError
            If no finding has that id.
        """
        try:
            return self._index_by_id[finding_id]
        except (KeyError, TypeError):
            raise KeyError(
                f"unknown finding id {finding_id!r} (registry {self.version}, {self.path})"
            ) from None

    def lookup_term(self, term: str) -> Finding | None:
        """Return the finding whose id, name or synonym is ``term``, or None.

        Matching ignores case, runs of blanks and full-width/half-width differences
        (NFKC), so ``"ＲＢＢＢ"``, ``"rbbb"`` and ``"完全右脚ブロック"`` all resolve.
        """
        index = self._index_by_term.get(normalize_term(term))
        return None if index is None else self.findings[index]

    def codes_to_findings(self, vocabulary: str, code: str) -> tuple[str, ...] | None:
        """Translate one code of a public vocabulary into finding ids.

        Parameters
        ----------
        vocabulary : {"scp", "snomed", "cpsc"}
            The label set the code belongs to.
        code : str
            The code; surrounding blanks and case are ignored.

        Returns
        -------
        tuple of str or None
            Finding ids in registry order; an empty tuple for a code known to have no
            counterpart; None for a code the registry has never heard of.

        Raises
        ------
        KeyError
            If ``vocabulary`` is not in the registry.
        """
        try:
            known = self.vocabularies[vocabulary]
        except KeyError:
            raise KeyError(
                f"unknown vocabulary {vocabulary!r}; known: {', '.join(self.vocabularies)}"
            ) from None
        return known.findings_for(code)

    def extract_findings(self, text: str) -> tuple[str, ...]:
        """Find the findings named in free report text.

        Names and synonyms of both languages are matched after NFKC and case folding.
        Reading left to right, the longest name starting at each position wins and the
        text it covers is not matched again, so ``"不完全右脚ブロック"`` is incomplete RBBB
        and not also complete RBBB, and ``"亜急性前壁梗塞の疑い"`` keeps its 亜急性 (subacute)
        instead of yielding the suspected *acute* statement hidden in its tail. An English
        term whose ASCII letter or digit end touches another ASCII letter or digit does not
        match (``"PAC"`` is not found inside ``"PACED"``);
        a term that is one ordinary English word (``Normal``, ``Tachycardia``) must be a
        statement of its own, delimited by punctuation or the ends of a line. Negations
        ("no ...", "...なし") are not understood.

        Returns
        -------
        tuple of str
            Unique finding ids in registry order.
        """
        normalized = _normalize_text(text)
        candidates: list[tuple[int, int, int]] = []
        for term in self._terms:
            if term.text not in normalized:
                continue
            for match in term.pattern.finditer(normalized):
                start, end = match.span()
                if term.whole_statement and not _is_own_statement(normalized, start, end):
                    continue
                candidates.append((start, end, term.finding_index))
        # Leftmost, then longest: a Japanese modifier (亜急性, 不完全, 反) comes first and
        # must not lose its finding to a longer name that starts inside it.
        candidates.sort(key=lambda candidate: (candidate[0], candidate[0] - candidate[1]))
        covered = bytearray(len(normalized))
        found: set[int] = set()
        for start, end, finding_index in candidates:
            if any(covered[start:end]):
                continue
            covered[start:end] = b"\x01" * (end - start)
            found.add(finding_index)
        return tuple(self.findings[index].id for index in sorted(found))

    def multi_hot(self, finding_ids: Iterable[str]) -> np.ndarray:
        """Return a uint8 vector of shape ``(len(self),)`` with 1 at each finding's index.

        Raises
        ------
        KeyError
            If an id is unknown.
        """
        vector = np.zeros(len(self), dtype=np.uint8)
        vector[list(self._indices(finding_ids))] = 1
        return vector

    def ids_from_multi_hot(self, vector: Any) -> tuple[str, ...]:
        """Return the ids of the non-zero positions of ``vector``, in registry order.

        Raises
        ------
        ValueError
            If ``vector`` is not one-dimensional of length ``len(self)``.
        """
        array = np.asarray(vector)
        if array.shape != (len(self),):
            raise ValueError(
                f"expected a vector of shape ({len(self)},) in registry order, got {array.shape}"
            )
        return tuple(self.findings[index].id for index in np.flatnonzero(array))

    def prompt(self, finding_ids: Iterable[str], lang: str) -> str | None:
        """Return the training prompt for a record's findings, or None if it has none.

        Names are taken as published (English capitalisation kept), ordered by registry
        order whatever the input order, de-duplicated and joined with the template's
        joiner ("、" for ja, ", " for en).

        Raises
        ------
        KeyError
            If an id is unknown.
        ValueError
            If ``lang`` is not "ja" or "en".
        """
        template = self.templates[_checked_language(lang)]
        indices = sorted(set(self._indices(finding_ids)))
        if not indices:
            return None
        return template.fill(self.findings[index].name(lang) for index in indices)

    def superset_prompt(self, test: str, class_id: str, lang: str) -> str:
        """Return the prompt template filled with one superset class name (zero-shot)."""
        template = self.templates[_checked_language(lang)]
        return template.fill([self._superset_class(test, class_id).name(lang)])

    def superset_classes(self, finding_ids: Iterable[str], test: str) -> tuple[str, ...]:
        """Return the classes of ``test`` that the findings belong to, in class order."""
        classes = self._classes(test)
        member_of: set[str] = set()
        for index in self._indices(finding_ids):
            member_of.update(self.findings[index].supersets.get(test, ()))
        return tuple(cls.id for cls in classes if cls.id in member_of)

    def findings_in_class(self, test: str, class_id: str) -> tuple[str, ...]:
        """Return the ids of the findings that belong to one superset class."""
        self._superset_class(test, class_id)
        return tuple(
            finding.id for finding in self.findings if class_id in finding.supersets.get(test, ())
        )

    def _indices(self, finding_ids: Iterable[str]) -> Iterable[int]:
        if isinstance(finding_ids, str):
            raise TypeError("expected an iterable of finding ids, got a single string")
        return (self.index(finding_id) for finding_id in finding_ids)

    def _classes(self, test: str) -> tuple[SupersetClass, ...]:
        try:
            return self.supersets[test]
        except KeyError:
            raise KeyError(
                f"unknown superset test {test!r}; known: {', '.join(self.supersets)}"
            ) from None

    def _superset_class(self, test: str, class_id: str) -> SupersetClass:
        for cls in self._classes(test):
            if cls.id == class_id:
                return cls
        raise KeyError(f"superset test {test!r} has no class {class_id!r}")


def normalize_term(text: str) -> str:
    """Return the form names are compared in: NFKC, case-folded, blanks collapsed.

    Typographic apostrophes and hyphens become ASCII ``'`` and ``-``.
    """
    return " ".join(_normalize_text(text).split())


def load_registry(path: str | Path | None = None) -> Registry:
    """Load and validate a label registry.

    Parameters
    ----------
    path : str or pathlib.Path, optional
        A registry YAML file. None loads the packaged ``labels/findings.yaml``
        (read once and cached).

    Returns
    -------
    Registry

    Raises
    ------
    RegistryError
        If the file cannot be read or breaks a rule; the message names file and line.
    """
    if path is None:
        return _load_packaged_registry()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RegistryError(path, None, f"cannot read the registry: {error}") from None
    return _parse_registry(text, path)


@functools.lru_cache(maxsize=1)
def _load_packaged_registry() -> Registry:
    # labels/findings.yaml at the top of the repository, mapped into the package as
    # ecgtool.labels at build time (pyproject.toml: package-dir), so wheels ship it.
    resource = resources.files("ecgtool.labels").joinpath("findings.yaml")
    return _parse_registry(resource.read_text(encoding="utf-8"), Path(str(resource)))


# --- parsing and validation -------------------------------------------------------------


class _Source:
    """The YAML node tree of the file, used to turn a data path into a line number."""

    def __init__(self, path: Path, root: yaml.Node) -> None:
        self.path = path
        self.root = root

    def error(self, keys: tuple[Any, ...], problem: str, *, at_key: bool = False) -> RegistryError:
        """Build an error located at the node reached by ``keys`` (its key when ``at_key``)."""
        node = self._node(keys, at_key=at_key)
        return RegistryError(self.path, node.start_mark.line + 1, problem)

    def _node(self, keys: tuple[Any, ...], *, at_key: bool) -> yaml.Node:
        # Stops at the deepest node that exists, so a missing key points at its parent.
        node = self.root
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, yaml.MappingNode):
                pair = next((p for p in node.value if p[0].value == str(key)), None)
                if pair is None:
                    return node
                node = pair[0] if (last and at_key) else pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                if not 0 <= key < len(node.value):
                    return node
                node = node.value[key]
            else:
                return node
        return node


def _parse_registry(text: str, path: Path) -> Registry:
    data, source = _read_yaml(text, path)
    if not isinstance(data, dict):
        raise source.error((), "the registry must be a YAML mapping")
    _check_keys(data, (), source, required=_TOP_LEVEL_KEYS, allowed=_TOP_LEVEL_KEYS + _READING_RULE_KEYS)
    version = _check_version(data, source)
    templates = _parse_templates(data["templates"], source)
    supersets, superset_names = _parse_supersets(data["supersets"], source)
    findings = _parse_findings(data["findings"], supersets, source)
    index_by_term = _index_terms(findings, source)
    index_by_id = {finding.id: finding.index for finding in findings}
    vocabularies = _parse_vocabularies(data["vocabularies"], index_by_id, source)
    exclusions = parse_exclusions(data.get("exclusions", []), index_by_id,
                                  lambda keys, problem: source.error(keys, problem))
    return Registry(
        version=version,
        hash=_content_hash({key: value for key, value in data.items() if key not in _READING_RULE_KEYS}),
        path=path,
        findings=findings,
        supersets=MappingProxyType(supersets),
        superset_names=MappingProxyType(superset_names),
        templates=MappingProxyType(templates),
        vocabularies=MappingProxyType(vocabularies),
        exclusions=exclusions,
        _index_by_id=MappingProxyType(index_by_id),
        _index_by_term=MappingProxyType(index_by_term),
        _terms=_extraction_terms(findings),
    )


def _read_yaml(text: str, path: Path) -> tuple[Any, _Source]:
    # libyaml's parser where PyYAML was built with it (4x faster: the registry loads in every
    # command), the pure-Python one otherwise; both give the same nodes and line marks.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise RegistryError(path, 1, "the registry file is empty")
        _check_duplicate_keys(root, path)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RegistryError(path, line, f"invalid YAML: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise RegistryError(path, None, f"invalid YAML: {error}") from None
    finally:
        loader.dispose()
    return data, _Source(path, root)


def _check_duplicate_keys(node: yaml.Node, path: Path) -> None:
    # PyYAML silently keeps the last of two equal keys; a registry must not.
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise RegistryError(path, line, "mapping keys must be plain scalars")
            if key_node.value in first_line:
                first = first_line[key_node.value]
                raise RegistryError(
                    path, line, f"duplicate key {key_node.value!r} (first at line {first})"
                )
            first_line[key_node.value] = line
            _check_duplicate_keys(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _check_duplicate_keys(child, path)


def _check_keys(
    mapping: dict,
    keys: tuple[Any, ...],
    source: _Source,
    *,
    required: Iterable[str],
    allowed: Iterable[str],
) -> None:
    for key in required:
        if key not in mapping:
            raise source.error(keys, f"missing {key!r}")
    allowed = tuple(allowed)
    for key in mapping:
        if key not in allowed:
            raise source.error(
                keys + (key,), f"unknown key {key!r} (expected one of: {', '.join(allowed)})",
                at_key=True,
            )


def _expect(value: Any, kind: type, keys: tuple[Any, ...], source: _Source, what: str) -> Any:
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        expected = {str: "a non-empty string", list: "a list", dict: "a mapping"}[kind]
        raise source.error(keys, f"{what} must be {expected}")
    return value


def _check_version(data: dict, source: _Source) -> str:
    version = data["version"]
    if not isinstance(version, str) or not _SEMVER_PATTERN.fullmatch(version):
        raise source.error(
            ("version",), f'version must be a quoted semver string such as "1.0.0", got {version!r}'
        )
    return version


def _parse_templates(raw: Any, source: _Source) -> dict[str, PromptTemplate]:
    keys = ("templates",)
    _expect(raw, dict, keys, source, "templates")
    _check_keys(raw, keys, source, required=LANGUAGES, allowed=LANGUAGES)
    templates = {}
    for lang in LANGUAGES:
        entry = _expect(raw[lang], dict, keys + (lang,), source, f"template {lang!r}")
        _check_keys(entry, keys + (lang,), source, required=("prompt", "joiner"),
                    allowed=("prompt", "joiner"))
        prompt = _expect(entry["prompt"], str, keys + (lang, "prompt"), source, "prompt")
        if prompt.count(PLACEHOLDER) != 1:
            raise source.error(
                keys + (lang, "prompt"), f"prompt must contain {PLACEHOLDER} exactly once"
            )
        joiner = entry["joiner"]
        if not isinstance(joiner, str) or not joiner:
            raise source.error(keys + (lang, "joiner"), "joiner must be a non-empty string")
        templates[lang] = PromptTemplate(prompt=prompt, joiner=joiner)
    return templates


def _parse_supersets(
    raw: Any, source: _Source
) -> tuple[dict[str, tuple[SupersetClass, ...]], dict[str, SupersetClass]]:
    keys = ("supersets",)
    _expect(raw, dict, keys, source, "supersets")
    supersets: dict[str, tuple[SupersetClass, ...]] = {}
    names: dict[str, SupersetClass] = {}
    for test, entry in raw.items():
        test_keys = keys + (test,)
        _check_id(test, test_keys, source, "superset test id", at_key=True)
        _expect(entry, dict, test_keys, source, f"superset test {test!r}")
        _check_keys(entry, test_keys, source, required=("en", "ja", "classes"),
                    allowed=("en", "ja", "classes"))
        names[test] = SupersetClass(
            id=test,
            en=_expect(entry["en"], str, test_keys + ("en",), source, "en"),
            ja=_expect(entry["ja"], str, test_keys + ("ja",), source, "ja"),
        )
        supersets[test] = _parse_classes(entry["classes"], test_keys + ("classes",), source)
    return supersets, names


def _parse_classes(raw: Any, keys: tuple[Any, ...], source: _Source) -> tuple[SupersetClass, ...]:
    _expect(raw, list, keys, source, "classes")
    if not raw:
        raise source.error(keys, "a superset test needs at least one class")
    classes = []
    seen: set[str] = set()
    for position, entry in enumerate(raw):
        entry_keys = keys + (position,)
        _expect(entry, dict, entry_keys, source, "a class")
        _check_keys(entry, entry_keys, source, required=("id", "en", "ja"),
                    allowed=("id", "en", "ja"))
        class_id = _check_id(entry["id"], entry_keys + ("id",), source, "class id")
        if class_id in seen:
            raise source.error(entry_keys + ("id",), f"duplicate class id {class_id!r}")
        seen.add(class_id)
        classes.append(
            SupersetClass(
                id=class_id,
                en=_expect(entry["en"], str, entry_keys + ("en",), source, "en"),
                ja=_expect(entry["ja"], str, entry_keys + ("ja",), source, "ja"),
            )
        )
    return tuple(classes)


def _check_id(value: Any, keys: tuple[Any, ...], source: _Source, what: str,
              *, at_key: bool = False) -> str:
    if not isinstance(value, str) or not _ID_PATTERN.fullmatch(value):
        raise source.error(keys, f"{what} {value!r} must be ASCII snake_case", at_key=at_key)
    return value


def _parse_findings(
    raw: Any, supersets: Mapping[str, tuple[SupersetClass, ...]], source: _Source
) -> tuple[Finding, ...]:
    keys = ("findings",)
    _expect(raw, list, keys, source, "findings")
    if len(raw) != FINDING_COUNT:
        raise source.error(
            keys, f"expected exactly {FINDING_COUNT} findings, found {len(raw)}", at_key=True
        )
    findings = []
    first_seen: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(raw):
        finding = _parse_finding(entry, index, supersets, source)
        for field_name in ("id", "en", "ja"):
            value = getattr(finding, field_name)
            if (field_name, value) in first_seen:
                other = first_seen[field_name, value] + 1
                raise source.error(
                    keys + (index, field_name),
                    f"duplicate {field_name} {value!r} (also finding #{other})",
                )
            first_seen[field_name, value] = index
        findings.append(finding)
    return tuple(findings)


def _parse_finding(
    entry: Any, index: int, supersets: Mapping[str, tuple[SupersetClass, ...]], source: _Source
) -> Finding:
    keys = ("findings", index)
    _expect(entry, dict, keys, source, "a finding")
    _check_keys(entry, keys, source, required=("id", "en", "ja"), allowed=_FINDING_KEYS)
    finding_id = _check_id(entry["id"], keys + ("id",), source, "finding id")
    synonyms = _parse_synonyms(entry.get("synonyms", {}), keys + ("synonyms",), source)
    return Finding(
        id=finding_id,
        index=index,
        en=_expect(entry["en"], str, keys + ("en",), source, "en"),
        ja=_expect(entry["ja"], str, keys + ("ja",), source, "ja"),
        synonyms_en=synonyms["en"],
        synonyms_ja=synonyms["ja"],
        supersets=_parse_membership(entry.get("supersets", {}), keys + ("supersets",),
                                    supersets, source),
    )


def _parse_synonyms(raw: Any, keys: tuple[Any, ...], source: _Source) -> dict[str, tuple[str, ...]]:
    _expect(raw, dict, keys, source, "synonyms")
    _check_keys(raw, keys, source, required=(), allowed=LANGUAGES)
    synonyms = {}
    for lang in LANGUAGES:
        terms = _expect(raw.get(lang, []), list, keys + (lang,), source, f"synonyms.{lang}")
        for position, term in enumerate(terms):
            _expect(term, str, keys + (lang, position), source, "a synonym")
        synonyms[lang] = tuple(terms)
    return synonyms


def _parse_membership(
    raw: Any,
    keys: tuple[Any, ...],
    supersets: Mapping[str, tuple[SupersetClass, ...]],
    source: _Source,
) -> Mapping[str, tuple[str, ...]]:
    _expect(raw, dict, keys, source, "supersets")
    membership = {}
    for test, class_ids in raw.items():
        if test not in supersets:
            raise source.error(keys + (test,), f"unknown superset test {test!r}", at_key=True)
        _expect(class_ids, list, keys + (test,), source, f"supersets.{test}")
        if not class_ids:
            raise source.error(keys + (test,), f"empty class list for {test!r}: omit the test")
        known = {cls.id for cls in supersets[test]}
        for position, class_id in enumerate(class_ids):
            if class_id not in known:
                raise source.error(
                    keys + (test, position),
                    f"unknown class {class_id!r} of superset test {test!r} "
                    f"(known: {', '.join(cls.id for cls in supersets[test])})",
                )
        if len(set(class_ids)) != len(class_ids):
            raise source.error(keys + (test,), f"a class is listed twice for {test!r}")
        membership[test] = tuple(class_ids)
    return MappingProxyType(membership)


def _finding_terms(finding: Finding) -> list[tuple[str, tuple[Any, ...]]]:
    """Every string that names ``finding``, with the data path where it is written."""
    keys = ("findings", finding.index)
    terms = [(getattr(finding, name), keys + (name,)) for name in ("id", "en", "ja")]
    for lang, synonyms in (("en", finding.synonyms_en), ("ja", finding.synonyms_ja)):
        terms += [(term, keys + ("synonyms", lang, i)) for i, term in enumerate(synonyms)]
    return terms


def _index_terms(findings: tuple[Finding, ...], source: _Source) -> dict[str, int]:
    index_by_term: dict[str, int] = {}
    for finding in findings:
        for term, keys in _finding_terms(finding):
            normalized = normalize_term(term)
            owner = index_by_term.setdefault(normalized, finding.index)
            if owner != finding.index:
                raise source.error(
                    keys,
                    f"{term!r} of finding {finding.id!r} is ambiguous: it also names "
                    f"finding {findings[owner].id!r}",
                )
    return index_by_term


def _parse_vocabularies(
    raw: Any, index_by_id: Mapping[str, int], source: _Source
) -> dict[str, Vocabulary]:
    keys = ("vocabularies",)
    _expect(raw, dict, keys, source, "vocabularies")
    return {
        name: _parse_vocabulary(name, entry, keys + (name,), index_by_id, source)
        for name, entry in raw.items()
    }


def _parse_vocabulary(
    name: str, raw: Any, keys: tuple[Any, ...], index_by_id: Mapping[str, int], source: _Source
) -> Vocabulary:
    _check_id(name, keys, source, "vocabulary id", at_key=True)
    _expect(raw, dict, keys, source, f"vocabulary {name!r}")
    _check_keys(raw, keys, source, required=("map", "unmapped"), allowed=("map", "unmapped"))
    mapped_raw = _expect(raw["map"], dict, keys + ("map",), source, "map")
    unmapped_raw = _expect(raw["unmapped"], dict, keys + ("unmapped",), source, "unmapped")
    by_code: dict[str, tuple[str, ...]] = {}
    mapped: dict[str, tuple[str, ...]] = {}
    for code, targets in mapped_raw.items():
        code_keys = keys + ("map", code)
        _claim_code(code, code_keys, by_code, source)
        mapped[code] = _check_targets(targets, code_keys, index_by_id, source)
        by_code[_normalize_code(code)] = mapped[code]
    unmapped: dict[str, str] = {}
    for code, reason in unmapped_raw.items():
        code_keys = keys + ("unmapped", code)
        _claim_code(code, code_keys, by_code, source)
        unmapped[code] = _expect(reason, str, code_keys, source, f"the reason for {code!r}")
        by_code[_normalize_code(code)] = ()
    return Vocabulary(
        name=name,
        mapped=MappingProxyType(mapped),
        unmapped=MappingProxyType(unmapped),
        _by_code=MappingProxyType(by_code),
    )


def _claim_code(
    code: Any, keys: tuple[Any, ...], by_code: Mapping[str, Any], source: _Source
) -> None:
    if not isinstance(code, str) or not code.strip():
        raise source.error(
            keys, f"code {code!r} must be a string (quote numeric codes)", at_key=True
        )
    if _normalize_code(code) in by_code:
        raise source.error(
            keys, f"code {code!r} is listed twice (mapped and unmapped, or differing only in case)",
            at_key=True,
        )


def _check_targets(
    targets: Any, keys: tuple[Any, ...], index_by_id: Mapping[str, int], source: _Source
) -> tuple[str, ...]:
    _expect(targets, list, keys, source, "a mapping target")
    if not targets:
        raise source.error(keys, "empty target list: move the code to 'unmapped' with a reason")
    for position, target in enumerate(targets):
        if target not in index_by_id:
            raise source.error(keys + (position,), f"unknown finding id {target!r}")
    if len(set(targets)) != len(targets):
        raise source.error(keys, "a finding is listed twice")
    return tuple(sorted(targets, key=index_by_id.__getitem__))


def _content_hash(data: Any) -> str:
    canonical = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# --- text matching ----------------------------------------------------------------------


def _normalize_text(text: str) -> str:
    # Keeps line breaks: they separate statements in report text.
    text = unicodedata.normalize("NFKC", text).translate(_PUNCTUATION_VARIANTS).casefold()
    return _HORIZONTAL_SPACE.sub(" ", text)


def _normalize_code(code: str) -> str:
    return code.strip().casefold()


def _is_ascii_alnum(character: str) -> bool:
    return character.isascii() and character.isalnum()


def _term_pattern(term: str) -> re.Pattern[str]:
    # Only an ASCII end needs a boundary: Japanese statements run on without spaces.
    before = r"(?<![a-z0-9])" if _is_ascii_alnum(term[0]) else ""
    after = r"(?![a-z0-9])" if _is_ascii_alnum(term[-1]) else ""
    return re.compile(before + re.escape(term) + after)


def _extraction_terms(findings: tuple[Finding, ...]) -> tuple[_Term, ...]:
    terms: dict[str, _Term] = {}
    for finding in findings:
        names = (finding.en, finding.ja, *finding.synonyms_en, *finding.synonyms_ja)
        for name in names:
            text = normalize_term(name)
            whole_statement = bool(_ORDINARY_WORD.fullmatch(unicodedata.normalize("NFKC", name)))
            if text in terms:
                # The same spelling written twice for one finding: keep the looser rule.
                whole_statement = whole_statement and terms[text].whole_statement
            terms[text] = _Term(text, finding.index, _term_pattern(text), whole_statement)
    return tuple(terms.values())


def _is_own_statement(text: str, start: int, end: int) -> bool:
    before = text[:start].rstrip(" ")
    after = text[end:].lstrip(" ")
    return (not before or before[-1] in _STATEMENT_SEPARATORS) and (
        not after or after[0] in _STATEMENT_SEPARATORS
    )


def _checked_language(lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGUAGES}")
    return lang
