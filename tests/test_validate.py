"""Input rules: every rejected input says why."""

from __future__ import annotations

import pytest

from pki.validate import InvalidInput, validate_cn, validate_days, validate_san, validate_sans

BAD_CNS = [
    "",
    "   ",
    ".",
    "..",
    "../x",
    "a/b",
    "-rf",
    "site;rm -rf /",
    "$(reboot)",
    "x" * 65,
    "a b",
    "site-1.revoked",
    "a\\b",
]


@pytest.mark.parametrize("cn", BAD_CNS)
def test_bad_common_names_are_refused_with_a_message(cn: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_cn(cn)
    assert str(err.value)


@pytest.mark.parametrize("cn", ["site-001", "mqtt.ak-sg.com", "Site_7", "a", "x" * 64])
def test_good_common_names_pass(cn: str) -> None:
    assert validate_cn(f"  {cn} ") == cn


@pytest.mark.parametrize(
    ("san", "message"),
    [
        ("1.2.3.999", "not a valid IP address"),
        ("my host", "contains spaces"),
        ("bad_name", "neither an IP address nor a DNS name"),
        ("-lead.example", "neither"),
        ("::zz", "not a valid IP address"),
    ],
)
def test_bad_sans(san: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_san(san)


def test_good_sans_are_normalised_and_deduplicated() -> None:
    assert validate_sans("MQTT.ak-sg.com\n\n10.0.80.50\nmqtt.ak-sg.com\n::1\n*.sites.example") == [
        "mqtt.ak-sg.com",
        "10.0.80.50",
        "::1",
        "*.sites.example",
    ]


@pytest.mark.parametrize(("days", "message"), [(0, "at least 1"), (-5, "at least 1"), (731, "above"), ("x", "whole")])
def test_bad_validity(days: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_days(days, 730)


def test_validity_bounds() -> None:
    assert validate_days(1, 730) == 1
    assert validate_days("730", 730) == 730
