"""A record's bytes become JSON in one fast pass, and what that pass refuses is read as ever:
the values a record may hold and the reason a bad one is dead-lettered did not change."""

from __future__ import annotations

import json
import math

import pytest
from aiokafka.structs import ConsumerRecord

from hub.runtime.consumer import EventRejected, decode_record, json_value


def record(value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("orders", 0, 7, 1_700_000_000_000, 0, b"k", value, None,
                          1, len(value), [])


def test_integers_beyond_64_bits_decode_exactly() -> None:
    # orjson would hand back a float here, silently another amount
    assert json_value(b'{"total": 123456789012345678901234567890}') == {
        "total": 123456789012345678901234567890}


@pytest.mark.parametrize("raw", [b'{"name": "\\ud800"}', b'{"\\udfff": 1}', b'{"x": NaN}'])
def test_what_the_standard_library_accepts_still_decodes_the_same(raw: bytes) -> None:
    got = json_value(raw)
    want = json.loads(raw.decode())
    assert json.dumps(got) == json.dumps(want)  # NaN != NaN, their text is equal


def test_a_lone_surrogate_escape_reaches_the_handler_as_before() -> None:
    # refused later, where storing it would fail (an InputValidationError naming the input)
    assert decode_record(record(b'{"id": "o1", "name": "a\\ud800b"}'), None).payload == {
        "id": "o1", "name": "a\ud800b"}


def test_bytes_that_are_not_utf8_are_refused_naming_the_byte() -> None:
    with pytest.raises(EventRejected) as err:
        decode_record(record(b"\xff\xfe not utf-8"), None)
    assert err.value.stage == "deserialize"
    assert isinstance(err.value.cause, UnicodeDecodeError)
    assert "can't decode byte 0xff in position 0" in str(err.value)


def test_malformed_json_is_refused_with_the_parsers_reason_and_position() -> None:
    with pytest.raises(EventRejected) as err:
        decode_record(record(b"{not json"), None)
    assert err.value.stage == "deserialize"
    assert isinstance(err.value.cause, json.JSONDecodeError)
    assert str(err.value) == (
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")


def test_the_event_id_still_comes_from_the_body_when_no_header_names_it() -> None:
    decoded = decode_record(record(b'{"id": 42, "total": 1.5}'), None)
    assert decoded.event_id == "42"
    assert math.isclose(decoded.payload["total"], 1.5)
