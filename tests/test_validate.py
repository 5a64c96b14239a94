"""Input rules: every rejected input says why, and a name stands for one identity."""

from __future__ import annotations

import pytest

from pki.folders import split_folder
from pki.model import identity_of
from pki.validate import InvalidInput, validate_cn, validate_days, validate_san, validate_sans

ALPHABET = "may hold only letters, digits"
BAD_CNS = [
    ("", "is empty"),
    ("   ", "is empty"),
    (".", "is empty"),  # a lone trailing dot leaves nothing
    ("..", ALPHABET),
    ("a..b", "may not contain '..'"),
    ("../x", ALPHABET),
    ("a/b", ALPHABET),
    ("-rf", ALPHABET),
    ("site;rm -rf /", ALPHABET),
    ("$(reboot)", ALPHABET),
    ("x" * 65, "at most 64"),
    ("a b", ALPHABET),
    ("a\\b", ALPHABET),
    ("site-001..", "end with a dot"),
    ("site-1.revoked", "'.revoked', which marks archived"),
    ("x.revoked.2", "'.revoked', which marks archived"),
    ("X.Expired", "'.expired', which marks archived"),
    ("mqtt.replaced.example", "'.replaced', which marks archived"),
    ("site.quarantine", "'.quarantine', which marks archived"),
    ("site.foreign.3", "'.foreign', which marks archived"),
]


@pytest.mark.parametrize(("cn", "message"), BAD_CNS, ids=[repr(c)[:24] for c, _ in BAD_CNS])
def test_bad_common_names_are_refused_with_the_reason(cn: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_cn(cn)
    assert message in str(err.value)


@pytest.mark.parametrize("cn", ["site-001", "mqtt.ak-sg.com", "site_7", "a", "x" * 64, "revoked-site", "a.revokedx"])
def test_good_common_names_pass(cn: str) -> None:
    assert validate_cn(f"  {cn} ") == cn


@pytest.mark.parametrize(
    ("typed", "identity"),
    [("SITE-001", "site-001"), ("site-001.", "site-001"), ("Mqtt.Example.Com", "mqtt.example.com"),
     ("MQTT.EXAMPLE.COM.", "mqtt.example.com"), (" Site_7 ", "site_7")],
)  # fmt: skip
def test_case_and_a_trailing_dot_make_the_same_identity(typed: str, identity: str) -> None:
    assert validate_cn(typed) == identity_of(typed) == identity


def test_folder_names_give_the_identity_and_what_became_of_it() -> None:
    assert split_folder("site-001") == ("site-001", None)
    assert split_folder("SITE-001") == ("site-001", None)
    assert split_folder("site-001.revoked") == ("site-001", "revoked")
    assert split_folder("mqtt.example.com.replaced.12") == ("mqtt.example.com", "replaced")
    assert split_folder("x.quarantine.2") == ("x", "quarantine")
    assert split_folder("x.revoked.1") == ("x.revoked.1", None)  # numbering starts at 2


@pytest.mark.parametrize(
    ("san", "message"),
    [
        ("1.2.3.999", "not a valid IP address"),
        ("my host", "contains spaces"),
        ("bad_name", "neither an IP address nor a DNS name"),
        ("-lead.example", "neither an IP address nor a DNS name"),
        ("::zz", "not a valid IP address"),
        ("*", "needs at least two labels after '*.'"),
        ("*.com", "needs at least two labels after '*.'"),
        ("*.", "no trailing dot"),
        ("a.*.example.com", "neither an IP address nor a DNS name"),
        ("**.example.com", "neither an IP address nor a DNS name"),
        ("host.example.", "no trailing dot"),
    ],
)
def test_bad_sans(san: str, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_san(san)
    assert message in str(err.value)


def test_good_sans_are_normalised_and_deduplicated() -> None:
    assert validate_sans("MQTT.ak-sg.com\n\n10.0.80.50\nmqtt.ak-sg.com\n::1\n*.sites.example") == [
        "mqtt.ak-sg.com",
        "10.0.80.50",
        "::1",
        "*.sites.example",
    ]


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (0, "at least 1 day (got 0)"),
        (-5, "at least 1 day (got -5)"),
        (731, "731 days is above the CA's maximum of 730"),
        ("x", "'x' is not a whole number"),
        ("2.5", "'2.5' is not a whole number"),
        (True, "must be a whole number of days"),
        (None, "must be a whole number of days"),
    ],
)
def test_bad_validity(days: object, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_days(days, 730)
    assert message in str(err.value)


def test_validity_bounds() -> None:
    assert validate_days(1, 730) == 1
    assert validate_days("730", 730) == 730
    assert validate_days(" 30 ", 730) == 30
