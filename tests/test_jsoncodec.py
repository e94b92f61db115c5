"""Payload JSON as stored and forwarded: orjson (the "fast" extra) and the standard library agree."""

from __future__ import annotations

import json

import pytest

from mtls_receiver import jsoncodec

VALUES = [
    {
        "pix": [
            {
                "endToEndId": "E18236120202011231234567890123456",
                "valor": "10.00",
                "horario": "2026-11-23T10:00:00Z",
            }
        ]
    },
    {"nome": "João Ñandú ✓", "n": [1, 2.5, -3e-7, 1e16, True, False, None], "vazio": {}},
    {
        "big": 123456789012345678901234567890
    },  # beyond 64 bits: orjson refuses it, the library writes it exactly
    ["a", {"b": [{"c": 'd\n"\\'}]}],
]


@pytest.fixture(params=["orjson", "json"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "orjson":
        pytest.importorskip("orjson")  # installed with the test extra, so CI runs both
    else:
        monkeypatch.setattr(jsoncodec, "orjson", None)
    return request.param


@pytest.mark.parametrize("value", VALUES)
def test_compact_text_that_reads_back_as_the_same_value(codec: str, value: object) -> None:
    text = jsoncodec.dumps(value)
    assert json.loads(text) == value
    assert "\\u" not in text  # non-ASCII kept as it is


def test_both_write_the_same_text_for_pix_payloads(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("orjson")
    with_orjson = [jsoncodec.dumps(v) for v in VALUES[:1] + VALUES[3:]]
    monkeypatch.setattr(jsoncodec, "orjson", None)
    assert with_orjson == [jsoncodec.dumps(v) for v in VALUES[:1] + VALUES[3:]]
