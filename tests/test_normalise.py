"""parse_job, rule by rule: every legacy key, every jsonlite quirk, every malformed file."""

from __future__ import annotations

import calendar
import codecs
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from comsa_migrate.core.jsonread import MAX_DEPTH
from comsa_migrate.core.layout import JobSource
from comsa_migrate.core.normalise import (
    COLUMN_LIMITS,
    JobRecord,
    LogEntry,
    Parsed,
    parse_job,
)
from comsa_migrate.problems import Severity

JOB_ID = "0a1b2c3d-0000-4000-8000-00000000abcd"
OTHER_ID = "0a1b2c3d-0000-4000-8000-00000000ffff"
#: the JSON's mtime, which stands in for a missing created_at
MTIME = datetime(2026, 1, 2, 3, 4, 5, 123456)
MTIME_NS = calendar.timegm(MTIME.timetuple()) * 10**9 + 123_456_789
CREATED = "2026-01-02 10:00:00"
#: a DATA_DIR that does not exist: no input_file can be found in it
NOWHERE = Path("/nonexistent/backend/data")
#: a key left out of the document
ABSENT = object()
#: every way the legacy backend (R's jsonlite) writes "nothing"
EMPTY_VALUES = [ABSENT, None, {}, "", []]
EMPTY_IDS = ["absent", "null", "{}", '""', "[]"]


def source(job_id: str = JOB_ID) -> JobSource:
    return JobSource(
        job_id=job_id,
        json_path=f"jobs/{job_id}.json",
        json_size=100,
        json_mtime_ns=MTIME_NS,
        json_ino=1,
        files=(),
        problems=(),
        fingerprint="0" * 32,
    )


def job(**fields: Any) -> dict[str, Any]:
    """A minimal valid job; a field set to ABSENT is left out."""
    doc: dict[str, Any] = {"id": JOB_ID, "type": "openva", "status": "completed"}
    doc["created_at"] = CREATED
    doc.update(fields)
    return {key: value for key, value in doc.items() if value is not ABSENT}


def parse(doc: Any, data_dir: Path = NOWHERE, job_id: str = JOB_ID) -> Parsed:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return parse_job(raw, source(job_id), data_dir)


def record(doc: Any, data_dir: Path = NOWHERE) -> JobRecord:
    parsed = parse(doc, data_dir)
    assert parsed.record is not None, parsed.problems
    return parsed.record


def codes(parsed: Parsed) -> list[str]:
    return [p.code for p in parsed.problems]


def error_of(doc: Any, data_dir: Path = NOWHERE) -> str:
    """The one error that stops this document; it must not yield a record."""
    parsed = parse(doc, data_dir)
    assert parsed.record is None, parsed.record
    assert not parsed.metadata_only
    errors = [p.code for p in parsed.problems if p.severity is Severity.ERROR]
    assert len(errors) == 1, parsed.problems
    return errors[0]


# -- the file as a whole --------------------------------------------------------------


def test_a_minimal_job_parses_without_any_problem_and_keeps_its_source() -> None:
    src = source()

    parsed = parse_job(orjson.dumps(job()), src, NOWHERE)

    assert parsed.problems == ()
    assert parsed.record is not None
    assert parsed.record.id == JOB_ID
    assert parsed.record.source is src


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \n\t\r\n",
        b'{"id": "0a1b2c3d-0000-4000-8000-00000000abcd", "type": "openva", "sta',
        b'{"type": "openva", "status": "completed",}',
        b'{"type": "op\xffenva", "status": "completed"}',
        b'{"type": "openva", "status": "completed", "result": {"x": NaN}}',
        b'{"type": "openva", "status": "completed", "result": {"x": Infinity}}',
        b'{"type": "openva", "status": "completed", "result": {"x": -Infinity}}',
        b"{'type': 'openva', 'status': 'completed'}",
        b'{"type": "openva"} {"status": "completed"}',
    ],
    ids=[
        "empty",
        "whitespace-only",
        "truncated",
        "trailing-comma",
        "bad-utf8",
        "nan",
        "infinity",
        "minus-infinity",
        "single-quotes",
        "two-documents",
    ],
)
def test_bytes_that_are_not_json_are_invalid_json(raw: bytes) -> None:
    assert error_of(raw) == "invalid_json"


def test_a_utf8_bom_is_read() -> None:
    rec = record(codecs.BOM_UTF8 + orjson.dumps(job(country="Moçambique")))

    assert rec.country == "Moçambique"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_utf16_or_utf32_document_is_invalid_json(encoding: str) -> None:
    text = orjson.dumps(job()).decode()
    raw = text.encode(encoding)
    if not raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raw = (codecs.BOM_UTF16_LE if encoding.endswith("le") else codecs.BOM_UTF16_BE) + raw

    assert error_of(raw) == "invalid_json"


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'[{"type": "openva", "status": "completed"}]', b'"job"', b"42", b"null", b"true"],
)
def test_json_that_is_not_an_object_is_not_an_object(raw: bytes) -> None:
    assert error_of(raw) == "not_an_object"


def test_a_number_too_large_for_a_double_is_invalid_json_not_silently_infinite() -> None:
    raw = orjson.dumps(job(result={"x": 1})).replace(b'"x":1', b'"x":1e400')

    assert error_of(raw) == "invalid_json"


@pytest.mark.parametrize(
    "number", [2**64, 2**64 + 1, -(2**63) - 1, 10**30, 123456789012345678901234567890]
)
def test_integers_beyond_64_bits_are_valid_json_and_kept_exactly(number: int) -> None:
    raw = orjson.dumps(job(result={"n": 0})).replace(b'"n":0', f'"n":{number}'.encode())

    assert record(raw).result == {"n": number}


def test_a_64_bit_integer_is_kept_exactly() -> None:
    raw = orjson.dumps(job(result={"n": 2**63 - 1, "m": 2**64 - 1, "k": -(2**63)}))

    assert record(raw).result == {"n": 2**63 - 1, "m": 2**64 - 1, "k": -(2**63)}


def test_a_big_integer_with_a_lone_surrogate_in_a_stored_field_is_invalid_field() -> None:
    raw = orjson.dumps(job(result={"n": 0, "s": "x"}))
    raw = raw.replace(b'"n":0', b'"n":99999999999999999999').replace(b'"x"', b'"\\ud800"')

    assert error_of(raw) == "invalid_field"


def test_a_lone_surrogate_escape_in_a_stored_field_is_invalid_field() -> None:
    raw = orjson.dumps(job(country="x")).replace(b'"x"', b'"\\udc00abc"')

    assert error_of(raw) == "invalid_field"


def test_a_surrogate_pair_escape_is_one_character() -> None:
    raw = orjson.dumps(job(country="x")).replace(b'"x"', b'"\\ud83c\\udf0d"')

    assert record(raw).country == "\N{EARTH GLOBE EUROPE-AFRICA}"


@pytest.mark.parametrize("depth", [300, 1020, 100_000])
def test_a_document_nested_absurdly_deep_is_invalid_json(depth: int) -> None:
    raw = orjson.dumps(job(result={"x": 0})).replace(
        b'"x":0', b'"x":' + b"[" * depth + b"]" * depth
    )

    assert error_of(raw) == "invalid_json"


def nested_lists(containers: int) -> Any:
    """A job whose document nests ``containers`` deep, itself included."""
    value: Any = []
    for _ in range(containers - 2):
        value = [value]
    return job(extra=value)


def test_a_document_nested_exactly_max_depth_is_kept() -> None:
    assert parse(nested_lists(MAX_DEPTH)).record is not None


def test_a_document_nested_one_level_beyond_max_depth_is_invalid_json() -> None:
    assert error_of(nested_lists(MAX_DEPTH + 1)) == "invalid_json"


def test_a_document_nested_a_few_levels_deep_is_kept() -> None:
    nested: Any = "leaf"
    for _ in range(50):
        nested = {"k": [nested]}

    assert record(job(result=nested)).result == nested


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "open\x00va"},
        {"country": "Sierra\x00Leone"},
        {"error": "boom\x00"},
        {"error": {"message": "a\x00b"}},
        {"result": {"nested": ["ok", {"deep": "x\x00"}]}},
        {"result": {"key\x00": 1}},
        {"log": ["[2026-01-02 10:00:00] a\x00b"]},
        {"input_file": "data/uploads/x\x00/input.csv"},
    ],
    ids=[
        "type",
        "country",
        "error-string",
        "error-object",
        "result-value",
        "result-key",
        "log",
        "input",
    ],
)
def test_u0000_in_any_stored_string_is_invalid_field(fields: dict[str, Any]) -> None:
    assert error_of(job(**fields)) == "invalid_field"


def test_u0000_in_a_field_that_is_not_stored_does_not_stop_the_job() -> None:
    parsed = parse(job(demo_id="adult\x00ensemble"))

    assert parsed.record is not None
    assert codes(parsed) == ["unmapped_fields"]


def test_an_escaped_backslash_before_u0000_is_text_not_a_nul() -> None:
    assert record(job(country="\\u0000")).country == "\\u0000"


def test_duplicate_keys_keep_the_last_value() -> None:
    raw = b'{"type": "openva", "status": "pending", "status": "failed"}'

    assert record(raw).status == "failed"


def test_every_problem_names_the_job_and_its_file() -> None:
    parsed = parse(job(id=ABSENT, created_at=ABSENT, algorithm=["A", "B"], extra=1))

    assert sorted(codes(parsed)) == [
        "algorithm_list_truncated",
        "created_at_from_mtime",
        "missing_id",
        "unmapped_fields",
    ]
    for problem in parsed.problems:
        assert (problem.job_id, problem.path) == (JOB_ID, f"jobs/{JOB_ID}.json")


# -- metadata sidecars ----------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"id": JOB_ID, "algorithm": "InterVA", "use_sample_data": True, "demo_id": "x"},
        {"type": {}, "status": None, "algorithm": "InterVA"},
        {"type": "", "status": [], "result": "not an object"},
        {"id": OTHER_ID, "created_at": "not a timestamp"},
        {"id": "not a uuid", "notes": "a\x00b"},
    ],
    ids=["empty", "demo-config", "jsonlite-nulls", "empty-strings", "id-mismatch", "bad-id-nul"],
)
def test_a_json_without_type_and_status_is_a_metadata_sidecar_never_an_error(
    doc: dict[str, Any],
) -> None:
    parsed = parse(doc)

    assert parsed.record is None
    assert parsed.metadata_only
    assert codes(parsed) == ["metadata_only"]


# -- id ---------------------------------------------------------------------------------


def test_an_id_in_upper_case_equal_to_the_stem_is_stored_lower_case() -> None:
    assert record(job(id=JOB_ID.upper())).id == JOB_ID


@pytest.mark.parametrize("value", EMPTY_VALUES, ids=EMPTY_IDS)
def test_a_missing_id_takes_the_file_stem_with_a_missing_id_warning(value: Any) -> None:
    parsed = parse(job(id=value))

    assert parsed.record is not None
    assert parsed.record.id == JOB_ID
    assert codes(parsed) == ["missing_id"]


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        JOB_ID[:-1],
        f"{{{JOB_ID}}}",
        f" {JOB_ID}",
        JOB_ID.replace("-", ""),
        42,
        [JOB_ID],
    ],
)
def test_an_id_that_is_not_a_uuid_is_invalid_job_id(value: Any) -> None:
    assert error_of(job(id=value)) == "invalid_job_id"


def test_an_id_that_differs_from_the_file_stem_is_id_mismatch() -> None:
    assert error_of(job(id=OTHER_ID)) == "id_mismatch"


# -- type and status --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["type", "status"])
@pytest.mark.parametrize("value", EMPTY_VALUES, ids=EMPTY_IDS)
def test_type_and_status_are_both_required(key: str, value: Any) -> None:
    assert error_of(job(**{key: value})) == "missing_field"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("pending", "pending"),
        ("Running", "running"),
        ("COMPLETED", "completed"),
        ("fAiLeD", "failed"),
    ],
)
def test_status_is_case_insensitive_and_stored_lower_case(value: str, stored: str) -> None:
    assert record(job(status=value)).status == stored


@pytest.mark.parametrize(
    "value", ["done", "complete", "completed ", "cancelled", "queued", "completed successfully ok"]
)
def test_a_status_outside_the_four_is_invalid_status(value: str) -> None:
    assert error_of(job(status=value)) == "invalid_status"


@pytest.mark.parametrize("key", ["type", "status"])
@pytest.mark.parametrize("value", [1, True, ["openva"], {"a": "b"}])
def test_type_and_status_that_are_not_text_are_invalid_field(key: str, value: Any) -> None:
    assert error_of(job(**{key: value})) == "invalid_field"


def test_type_is_kept_as_written() -> None:
    assert record(job(type="vacalibration")).type == "vacalibration"


# -- text columns and their lengths -------------------------------------------------------

TEXT_COLUMNS = ["type", "algorithm", "age_group", "country", "calib_model_type"]


@pytest.mark.parametrize("column", TEXT_COLUMNS)
@pytest.mark.parametrize("letter", ["a", "é", "\N{EARTH GLOBE EUROPE-AFRICA}"])
def test_a_value_exactly_as_long_as_its_column_is_kept(column: str, letter: str) -> None:
    value = letter * COLUMN_LIMITS[column]

    assert getattr(record(job(**{column: value})), column) == value


@pytest.mark.parametrize("column", TEXT_COLUMNS)
def test_a_value_one_character_longer_than_its_column_is_invalid_field(column: str) -> None:
    assert error_of(job(**{column: "é" * (COLUMN_LIMITS[column] + 1)})) == "invalid_field"


def test_column_limits_are_those_of_the_schema() -> None:
    ddl = (Path(__file__).resolve().parent.parent / "schema" / "001_initial_schema.sql").read_text()
    jobs = re.search(r"CREATE TABLE jobs \((.*?)\n\);", ddl, re.S)
    assert jobs is not None
    varchars = re.findall(r"^\s*(\w+) VARCHAR\((\d+)\)", jobs.group(1), re.M)

    assert {column: int(limit) for column, limit in varchars} == COLUMN_LIMITS


@pytest.mark.parametrize("column", ["age_group", "country", "calib_model_type"])
@pytest.mark.parametrize("value", EMPTY_VALUES, ids=EMPTY_IDS)
def test_jsonlite_nothing_in_a_text_column_is_null(column: str, value: Any) -> None:
    parsed = parse(job(**{column: value}))

    assert parsed.record is not None
    assert getattr(parsed.record, column) is None
    assert parsed.problems == ()


@pytest.mark.parametrize("column", ["age_group", "country", "calib_model_type"])
@pytest.mark.parametrize("value", [3, 1.5, True, ["adult"], {"name": "adult"}])
def test_a_text_column_given_another_type_is_invalid_field(column: str, value: Any) -> None:
    assert error_of(job(**{column: value})) == "invalid_field"


def test_text_columns_are_stored_as_written() -> None:
    rec = record(job(age_group="neonate", country="Mozambique", calib_model_type="Mmatprior"))

    assert (rec.age_group, rec.country, rec.calib_model_type) == (
        "neonate",
        "Mozambique",
        "Mmatprior",
    )


# -- algorithm and ensemble ---------------------------------------------------------------


def test_an_algorithm_string_is_kept() -> None:
    parsed = parse(job(algorithm="InterVA"))

    assert parsed.record is not None
    assert parsed.record.algorithm == "InterVA"
    assert parsed.problems == ()


def test_an_algorithm_list_keeps_its_first_element_with_an_info() -> None:
    parsed = parse(job(algorithm=["InterVA", "InSilicoVA", "EAVA"]))

    assert parsed.record is not None
    assert parsed.record.algorithm == "InterVA"
    assert codes(parsed) == ["algorithm_list_truncated"]
    assert parsed.problems[0].severity is Severity.INFO


def test_a_one_element_algorithm_list_is_not_truncation() -> None:
    parsed = parse(job(algorithm=["InSilicoVA"]))

    assert parsed.record is not None
    assert parsed.record.algorithm == "InSilicoVA"
    assert parsed.problems == ()


@pytest.mark.parametrize("value", EMPTY_VALUES, ids=EMPTY_IDS)
def test_no_algorithm_is_null(value: Any) -> None:
    assert record(job(algorithm=value)).algorithm is None


@pytest.mark.parametrize("value", [7, True, {"name": "InterVA"}, [1, "InterVA"], ["InterVA", None]])
def test_an_algorithm_that_is_not_text_is_invalid_field(value: Any) -> None:
    assert error_of(job(algorithm=value)) == "invalid_field"


def test_the_kept_algorithm_must_fit_its_column() -> None:
    assert error_of(job(algorithm=["x" * 51, "InterVA"])) == "invalid_field"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (True, True),
        (False, False),
        ("TRUE", True),
        ("FALSE", False),
        ([True], True),
        (["FALSE"], False),
    ],
)
def test_ensemble_is_a_boolean_or_true_false_text(value: Any, stored: bool) -> None:
    assert record(job(ensemble=value, algorithm=["A", "B"])).ensemble is stored


@pytest.mark.parametrize(
    ("algorithm", "stored"),
    [(["InterVA", "InSilicoVA"], True), (["InterVA"], False), ("InterVA", False), (ABSENT, False)],
)
@pytest.mark.parametrize("value", EMPTY_VALUES, ids=EMPTY_IDS)
def test_a_missing_ensemble_is_true_only_when_algorithm_held_several(
    value: Any, algorithm: Any, stored: bool
) -> None:
    assert record(job(ensemble=value, algorithm=algorithm)).ensemble is stored


@pytest.mark.parametrize("value", ["yes", "T", "1", 1, 0, 0.0, {"a": 1}, [True, False]])
def test_an_ensemble_that_is_not_a_boolean_is_invalid_field(value: Any) -> None:
    assert error_of(job(ensemble=value)) == "invalid_field"


# -- timestamps ---------------------------------------------------------------------------

TIMESTAMP_CASES = [
    ("2026-01-02 10:00:00", datetime(2026, 1, 2, 10, 0, 0)),
    ("2026-01-02 10:00:00.5", datetime(2026, 1, 2, 10, 0, 0, 500000)),
    ("2026-01-02 10:00:00.123456", datetime(2026, 1, 2, 10, 0, 0, 123456)),
    ("2026-01-02T10:00:00", datetime(2026, 1, 2, 10, 0, 0)),
    ("2026-01-02T10:00:00.250Z", datetime(2026, 1, 2, 10, 0, 0, 250000)),
    ("2026-01-02T10:00:00Z", datetime(2026, 1, 2, 10, 0, 0)),
    ("2026-01-02T10:00:00+00:00", datetime(2026, 1, 2, 10, 0, 0)),
    ("2026-01-02T10:00:00+02:00", datetime(2026, 1, 2, 8, 0, 0)),
    ("2026-01-02T10:00:00-05:30", datetime(2026, 1, 2, 15, 30, 0)),
    ("2026-01-02T00:30:00+01:00", datetime(2026, 1, 1, 23, 30, 0)),
    ("2026-01-02T10:00:00.123456+02:00", datetime(2026, 1, 2, 8, 0, 0, 123456)),
]


@pytest.mark.parametrize("key", ["created_at", "started_at", "completed_at"])
@pytest.mark.parametrize(("text", "moment"), TIMESTAMP_CASES, ids=[c[0] for c in TIMESTAMP_CASES])
def test_timestamps_are_parsed_and_offsets_converted_to_naive_utc(
    key: str, text: str, moment: datetime
) -> None:
    stored = getattr(record(job(**{key: text})), key)

    assert stored == moment
    assert stored.tzinfo is None


@pytest.mark.parametrize("value", [*EMPTY_VALUES, "NA"], ids=[*EMPTY_IDS, "NA"])
def test_a_missing_created_at_takes_the_files_mtime_with_a_warning(value: Any) -> None:
    parsed = parse(job(created_at=value))

    assert parsed.record is not None
    assert parsed.record.created_at == MTIME
    assert codes(parsed) == ["created_at_from_mtime"]


@pytest.mark.parametrize("key", ["started_at", "completed_at"])
@pytest.mark.parametrize("value", [*EMPTY_VALUES, "NA"], ids=[*EMPTY_IDS, "NA"])
def test_a_missing_started_or_completed_at_is_null(key: str, value: Any) -> None:
    parsed = parse(job(**{key: value}))

    assert parsed.record is not None
    assert getattr(parsed.record, key) is None
    assert parsed.problems == ()


@pytest.mark.parametrize("key", ["created_at", "started_at", "completed_at"])
@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2026-13-01 10:00:00",
        "2026-02-30 10:00:00",
        "2026-01-02 25:00:00",
        "2026-01-02 10:00:60",
        "02/01/2026 10:00:00",
        "2026-01-02 10:00:00 CET",
        "na",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
        1767348000,
        1767348000.5,
        True,
        ["2026-01-02 10:00:00"],
        {"time": "2026-01-02 10:00:00"},
    ],
)
def test_a_timestamp_that_cannot_be_parsed_is_invalid_timestamp(key: str, value: Any) -> None:
    assert error_of(job(**{key: value})) == "invalid_timestamp"


# -- error and result ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (ABSENT, {}),
        (None, {}),
        ({}, {}),
        ("", {}),
        ([], {}),
        ("cannot open the connection", {"message": "cannot open the connection"}),
        (["first line", "second line"], {"message": "first line\nsecond line"}),
        (["only line"], {"message": "only line"}),
        ({"message": "boom", "call": "f(x)"}, {"message": "boom", "call": "f(x)"}),
        ({"code": 3, "details": [1, None]}, {"code": 3, "details": [1, None]}),
    ],
)
def test_error_is_normalised_to_an_object(value: Any, stored: dict[str, Any]) -> None:
    assert record(job(error=value)).error == stored


@pytest.mark.parametrize("value", [3, 2.5, True, ["line", 3], [None], [{"message": "x"}]])
def test_an_error_of_another_shape_is_invalid_field(value: Any) -> None:
    assert error_of(job(error=value)) == "invalid_field"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (ABSENT, {}),
        (None, {}),
        ({}, {}),
        ([], {}),
        ({"n_records": 81, "files": ["causes.csv"]}, {"n_records": 81, "files": ["causes.csv"]}),
        ({"nested": {"a": [1, 2.5, None, True]}}, {"nested": {"a": [1, 2.5, None, True]}}),
    ],
)
def test_result_is_an_object_and_nothing_becomes_an_empty_object(
    value: Any, stored: dict[str, Any]
) -> None:
    assert record(job(result=value)).result == stored


@pytest.mark.parametrize("value", ["done", "", 3, 0.5, True, ["causes.csv"], [{"n": 1}]])
def test_a_result_that_is_not_an_object_is_invalid_field(value: Any) -> None:
    assert error_of(job(result=value)) == "invalid_field"


# -- log ----------------------------------------------------------------------------------


def test_prefixed_log_lines_are_kept_whole_with_their_prefixs_time() -> None:
    rec = record(job(log=["[2026-01-02 10:00:05] Starting", "[2026-01-02 10:01:00] Done"]))

    assert rec.logs == (
        LogEntry(datetime(2026, 1, 2, 10, 0, 5), "[2026-01-02 10:00:05] Starting"),
        LogEntry(datetime(2026, 1, 2, 10, 1, 0), "[2026-01-02 10:01:00] Done"),
    )


def test_a_log_string_is_one_line() -> None:
    rec = record(job(log="[2026-01-03 09:00:00] Queued"))

    assert rec.logs == (LogEntry(datetime(2026, 1, 3, 9, 0, 0), "[2026-01-03 09:00:00] Queued"),)


def test_lines_of_one_second_are_a_microsecond_apart_in_file_order() -> None:
    lines = ["[2026-01-02 10:00:05] a", "[2026-01-02 10:00:05] b", "[2026-01-02 10:00:05] c"]
    rec = record(job(log=[*lines, "[2026-01-02 10:00:06] d"]))

    assert [e.timestamp for e in rec.logs] == [
        datetime(2026, 1, 2, 10, 0, 5),
        datetime(2026, 1, 2, 10, 0, 5, 1),
        datetime(2026, 1, 2, 10, 0, 5, 2),
        datetime(2026, 1, 2, 10, 0, 6),
    ]


def test_a_line_without_prefix_is_kept_whole_a_step_after_the_line_before() -> None:
    rec = record(
        job(
            log=[
                "[2026-01-02 10:00:05] Starting",
                "  at f(x)",
                "[INFO] note",
                "[2026-01-02 10:00:09] x",
            ]
        )
    )

    assert rec.logs == (
        LogEntry(datetime(2026, 1, 2, 10, 0, 5), "[2026-01-02 10:00:05] Starting"),
        LogEntry(datetime(2026, 1, 2, 10, 0, 5, 1), "  at f(x)"),
        LogEntry(datetime(2026, 1, 2, 10, 0, 5, 2), "[INFO] note"),
        LogEntry(datetime(2026, 1, 2, 10, 0, 9), "[2026-01-02 10:00:09] x"),
    )


def test_a_first_line_without_prefix_takes_started_at() -> None:
    rec = record(
        job(started_at="2026-01-02 10:00:01.5", log=["no prefix", "[2026-01-02 10:00:05] a"])
    )

    assert rec.logs[0] == LogEntry(datetime(2026, 1, 2, 10, 0, 1, 500000), "no prefix")


@pytest.mark.parametrize("started_at", [ABSENT, {}, "NA"])
def test_a_first_line_without_prefix_takes_created_at_when_there_is_no_started_at(
    started_at: Any,
) -> None:
    rec = record(job(started_at=started_at, log=["no prefix"]))

    assert rec.logs == (LogEntry(datetime(2026, 1, 2, 10, 0, 0), "no prefix"),)


def test_a_first_line_without_prefix_takes_the_mtime_when_created_at_is_missing_too() -> None:
    rec = record(job(created_at=ABSENT, log=["no prefix"]))

    assert rec.logs == (LogEntry(MTIME, "no prefix"),)


def test_time_set_back_still_orders_by_file_order_and_the_message_keeps_its_time() -> None:
    rec = record(
        job(
            log=[
                "[2026-01-02 10:00:09] later",
                "[2026-01-02 10:00:01] earlier",
                "[2026-01-02 10:00:05] mid",
            ]
        )
    )

    assert [entry.message for entry in rec.logs] == [
        "[2026-01-02 10:00:09] later",
        "[2026-01-02 10:00:01] earlier",
        "[2026-01-02 10:00:05] mid",
    ]
    assert [entry.timestamp for entry in rec.logs] == [
        datetime(2026, 1, 2, 10, 0, 9),
        datetime(2026, 1, 2, 10, 0, 9, 1),
        datetime(2026, 1, 2, 10, 0, 9, 2),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "[2026-01-02 10:00:05]Done",
        "[2026-01-02 10:00:05]  two spaces",
        "[2026-01-02 10:00:05] ",
        "[2026-01-02 10:00:05] multi\nline",
        "[2026-01-02 10:00:05] [nested] brackets",
    ],
)
def test_a_prefixed_line_is_stored_whole_whatever_follows_its_prefix(line: str) -> None:
    assert record(job(log=[line])).logs == (LogEntry(datetime(2026, 1, 2, 10, 0, 5), line),)


@pytest.mark.parametrize(
    "line",
    ["[2026-01-02 10:00:05.123] x", "[2026-01-02T10:00:05] x", " [2026-01-02 10:00:05] x", ""],
)
def test_a_line_whose_prefix_is_not_exactly_the_legacy_one_is_kept_whole(line: str) -> None:
    rec = record(job(started_at="2026-01-02 09:00:00", log=[line]))

    assert rec.logs == (LogEntry(datetime(2026, 1, 2, 9, 0, 0), line),)


@pytest.mark.parametrize("value", EMPTY_VALUES, ids=EMPTY_IDS)
def test_no_log_is_no_lines(value: Any) -> None:
    assert record(job(log=value)).logs == ()


@pytest.mark.parametrize("line", ["[2026-13-02 10:00:05] x", "[2026-01-02 24:00:00] x"])
def test_a_log_prefix_that_is_not_a_date_is_invalid_timestamp(line: str) -> None:
    assert error_of(job(log=["[2026-01-02 10:00:00] ok", line])) == "invalid_timestamp"


@pytest.mark.parametrize("line", [3, None, {}, ["nested"], True])
def test_a_log_line_that_is_not_text_is_invalid_field(line: Any) -> None:
    assert error_of(job(log=["[2026-01-02 10:00:00] ok", line])) == "invalid_field"


def test_a_log_that_is_a_number_is_invalid_field() -> None:
    assert error_of(job(log=42)) == "invalid_field"


# -- input_file ---------------------------------------------------------------------------


def make_data_dir(tmp_path: Path, name: str = "data", *, with_input: bool = True) -> Path:
    data_dir = tmp_path / "backend" / name
    (data_dir / "jobs").mkdir(parents=True)
    if with_input:
        upload = data_dir / "uploads" / JOB_ID
        upload.mkdir(parents=True)
        (upload / "input.csv").write_text("ID\n1\n")
    return data_dir


def input_outcome(value: Any, data_dir: Path) -> tuple[str | None, list[str]]:
    parsed = parse(job(input_file=value), data_dir)
    assert parsed.record is not None, parsed.problems
    return parsed.record.input_file_path, codes(parsed)


INPUT = f"uploads/{JOB_ID}/input.csv"


@pytest.mark.parametrize(
    "value",
    [
        f"data/uploads/{JOB_ID}/input.csv",
        f"uploads/{JOB_ID}/input.csv",
        f"./data/uploads/{JOB_ID}/input.csv",
        f"data/uploads/{JOB_ID}/../{JOB_ID}/input.csv",
        f"data//uploads/{JOB_ID}/input.csv",
    ],
)
def test_an_input_file_on_disk_is_stored_relative_to_data_dir(tmp_path: Path, value: str) -> None:
    assert input_outcome(value, make_data_dir(tmp_path)) == (INPUT, [])


def test_an_absolute_input_file_inside_data_dir_is_stored_relative(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path)

    assert input_outcome(str(data_dir / INPUT), data_dir) == (INPUT, [])


@pytest.mark.parametrize("name", ["legacy-copy", "data-2024", "backend-data"])
def test_legacy_paths_resolve_in_a_data_dir_not_named_data(tmp_path: Path, name: str) -> None:
    data_dir = make_data_dir(tmp_path, name)

    assert input_outcome(f"data/uploads/{JOB_ID}/input.csv", data_dir) == (INPUT, [])


@pytest.mark.parametrize("name", ["data", "legacy-copy"])
def test_a_missing_input_file_is_stored_where_it_would_be_with_a_warning(
    tmp_path: Path, name: str
) -> None:
    data_dir = make_data_dir(tmp_path, name, with_input=False)

    assert input_outcome(f"data/uploads/{JOB_ID}/input.csv", data_dir) == (
        INPUT,
        ["missing_input_file"],
    )


def test_a_path_relative_to_data_dir_is_tried_after_its_parent(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path)
    # backend/data/data/uploads/... exists too, but backend/ is where legacy paths start
    shadow = data_dir / "data" / "uploads" / JOB_ID
    shadow.mkdir(parents=True)
    (shadow / "input.csv").write_text("shadow\n")

    assert input_outcome(f"data/uploads/{JOB_ID}/input.csv", data_dir) == (INPUT, [])


def test_a_path_found_only_relative_to_data_dir_is_used(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path, with_input=False)
    nested = data_dir / "data" / "uploads" / JOB_ID
    nested.mkdir(parents=True)
    (nested / "input.csv").write_text("nested\n")

    assert input_outcome(f"data/uploads/{JOB_ID}/input.csv", data_dir) == (
        f"data/uploads/{JOB_ID}/input.csv",
        [],
    )


@pytest.mark.parametrize(
    "value",
    [
        "../../../etc/passwd",
        "/etc/passwd",
        "data/../../etc/passwd",
        f"data/uploads/{JOB_ID}/../../../../secret.csv",
        "..",
        "../data",
        "../",
    ],
)
def test_an_input_file_outside_data_dir_is_null_with_a_warning(tmp_path: Path, value: str) -> None:
    assert input_outcome(value, make_data_dir(tmp_path)) == (None, ["input_path_outside_root"])


def test_an_absolute_input_file_in_a_sibling_folder_with_the_same_prefix_is_outside(
    tmp_path: Path,
) -> None:
    data_dir = make_data_dir(tmp_path)
    sibling = tmp_path / "backend" / "data-old" / "input.csv"
    sibling.parent.mkdir()
    sibling.write_text("x\n")

    assert input_outcome(str(sibling), data_dir) == (None, ["input_path_outside_root"])


def test_an_input_file_in_the_parent_of_data_dir_is_outside(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path)
    (data_dir.parent / "input.csv").write_text("x\n")

    assert input_outcome("../input.csv", data_dir) == (None, ["input_path_outside_root"])


@pytest.mark.parametrize("value", EMPTY_VALUES, ids=EMPTY_IDS)
def test_no_input_file_is_null_without_a_warning(tmp_path: Path, value: Any) -> None:
    assert input_outcome(value, make_data_dir(tmp_path)) == (None, [])


@pytest.mark.parametrize("value", [3, True, ["data/uploads/x/input.csv"], {"path": "x"}])
def test_an_input_file_that_is_not_text_is_invalid_field(value: Any) -> None:
    assert error_of(job(input_file=value)) == "invalid_field"


# -- unmapped fields ----------------------------------------------------------------------


def test_fields_without_a_column_are_listed_as_one_info() -> None:
    parsed = parse(job(use_sample_data=True, demo_id="x", zeta={}, alpha=None))

    assert parsed.record is not None
    assert codes(parsed) == ["unmapped_fields"]
    assert parsed.problems[0].severity is Severity.INFO
    assert parsed.problems[0].message == "not stored: alpha, demo_id, use_sample_data, zeta"


def test_a_complete_legacy_job_maps_every_field() -> None:
    doc = {
        "id": JOB_ID,
        "type": "pipeline",
        "status": "Completed",
        "algorithm": ["InterVA", "InSilicoVA"],
        "age_group": "adult",
        "country": "Sierra Leone",
        "calib_model_type": "Mmatprior",
        "created_at": "2026-01-02T10:00:00+02:00",
        "started_at": "2026-01-02 08:00:05.250000",
        "completed_at": "NA",
        "error": ["first line", "second line"],
        "result": {"n_records": 3},
        "log": ["[2026-01-02 08:00:05] Starting", "continued", "[2026-01-02 08:00:09] Done"],
    }

    parsed = parse(doc)

    assert codes(parsed) == ["algorithm_list_truncated"]
    assert parsed.record is not None
    rec = parsed.record
    assert (rec.id, rec.type, rec.status, rec.algorithm, rec.ensemble) == (
        JOB_ID,
        "pipeline",
        "completed",
        "InterVA",
        True,
    )
    assert (rec.age_group, rec.country, rec.calib_model_type) == (
        "adult",
        "Sierra Leone",
        "Mmatprior",
    )
    assert (rec.created_at, rec.started_at, rec.completed_at) == (
        datetime(2026, 1, 2, 8, 0, 0),
        datetime(2026, 1, 2, 8, 0, 5, 250000),
        None,
    )
    assert rec.error == {"message": "first line\nsecond line"}
    assert rec.result == {"n_records": 3}
    assert rec.input_file_path is None
    assert [(e.timestamp.second, e.timestamp.microsecond, e.message) for e in rec.logs] == [
        (5, 0, "[2026-01-02 08:00:05] Starting"),
        (5, 1, "continued"),
        (9, 0, "[2026-01-02 08:00:09] Done"),
    ]


# -- what parse_job accepts, PostgreSQL stores ------------------------------------------------


def test_values_at_every_accepted_edge_are_stored_by_postgresql_as_parsed(
    cli: Any, dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    globe = "\N{EARTH GLOBE EUROPE-AFRICA}"
    deep: Any = []
    for _ in range(MAX_DEPTH - 3):  # the document, result and this list make MAX_DEPTH
        deep = [deep]
    doc = job(
        type=globe * 50,
        algorithm=["é" * 50, "InterVA"],
        age_group="é" * 50,
        country=globe * 100,
        calib_model_type="\u00a0" * 50,
        created_at="2026-01-02T10:00:00.123456+02:00",
        error=["line one", "línea dos \u2028 after a separator"],
        result={"big": 0, "deep": deep, "negative": -(2**63)},
        log=["[2026-01-02 08:00:01] " + globe, "\\u0000 is text here"],
    )
    raw = orjson.dumps(doc).replace(b'"big":0', b'"big":' + str(2**70).encode())
    data_dir = tmp_path / "data"
    (data_dir / "jobs").mkdir(parents=True)
    (data_dir / "jobs" / f"{JOB_ID}.json").write_bytes(raw)
    expected = record(raw, data_dir)

    result = cli("backfill", data_dir, "--dsn", dsn)

    assert result.exit_code == 0, result.output
    row = conn.execute(
        "SELECT type, algorithm, age_group, country, calib_model_type, created_at, error, result"
        " FROM jobs WHERE id = %s",
        [JOB_ID],
    ).fetchone()
    assert row == (
        expected.type,
        expected.algorithm,
        expected.age_group,
        expected.country,
        expected.calib_model_type,
        datetime(2026, 1, 2, 8, 0, 0, 123456),
        expected.error,
        expected.result,
    )
    assert row[7]["big"] == 2**70
    logs = conn.execute(
        "SELECT timestamp, message FROM job_logs WHERE job_id = %s ORDER BY id", [JOB_ID]
    ).fetchall()
    assert [tuple(entry) for entry in logs] == [(e.timestamp, e.message) for e in expected.logs]
