"""The address check, pure: every spelling of a special address is seen for what it is.

Nothing here opens a connection; private and metadata addresses appear only as strings.
"""

from __future__ import annotations

import ipaddress

import pytest

from accord.policy.v1 import policy_pb2
from accord_policy.domain import addresses as a
from accord_policy.domain.rules import BadUrl, TenantPolicy, address_reasons, parse_url

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0177.0.0.1",
    "127.0.0.1.",
    "127.000.000.001",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[64:ff9b::7f00:1]",
    "localhost",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused(host: str) -> None:
    url = parse_url(f"http://{host}:8080/x")
    found = [url.address] if url.address is not None else a.local_name(url.host)
    assert found, host
    reasons = address_reasons(url.host, found, [])
    assert [r.code for r in reasons] == ["PRIVATE_NETWORK"], host


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("0", "unspecified"),
        ("0.0.0.0", "unspecified"),
        ("[::]", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("[fe80::1]", "link-local"),
        ("[fd00::1]", "unique-local"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("[ff02::1]", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("[::ffff:169.254.169.254]", "link-local"),
        ("[2002:a00:1::]", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_special_addresses_are_named(host: str, kind: str) -> None:
    address = parse_url(f"http://{host}/").address
    assert address is not None
    assert a.special_kind(address) == kind


@pytest.mark.parametrize("host", ["93.184.215.14", "[2606:4700::1111]", "8.8.8.8"])
def test_public_addresses_pass(host: str) -> None:
    address = parse_url(f"https://{host}/").address
    assert address is not None
    assert a.special_kind(address) is None
    assert address_reasons(host, [address], []) == []


def test_an_allowed_network_admits_only_what_it_holds() -> None:
    rules = policy_pb2.PolicyRules(allowed_networks=["127.0.0.1/32", "fd00::/8"])
    policies = [TenantPolicy("p", rules)]
    ip = ipaddress.ip_address
    assert address_reasons("h", [ip("127.0.0.1")], policies) == []
    assert address_reasons("h", [ip("::ffff:127.0.0.1")], policies) == []
    assert address_reasons("h", [ip("fd12::1")], policies) == []
    assert [r.code for r in address_reasons("h", [ip("127.0.0.2")], policies)] == [
        "PRIVATE_NETWORK"
    ]
    # Any one refused address refuses the host: a client may connect to any of them.
    both = [ip("127.0.0.1"), ip("10.0.0.1")]
    assert [r.code for r in address_reasons("h", both, policies)] == ["PRIVATE_NETWORK"]


def test_the_deprecated_switch_still_allows_every_private_network() -> None:
    policies = [TenantPolicy("p", policy_pb2.PolicyRules(allow_private_networks=True))]
    assert address_reasons("h", [ipaddress.ip_address("10.0.0.1")], policies) == []


def test_names_are_canonical_and_not_addresses() -> None:
    assert parse_url("http://Example.COM./").host == "example.com"
    assert parse_url("http://1.2.3.com/").address is None
    assert parse_url("http://0x7f.1/").host == "127.0.0.1"
    assert parse_url("https://[::FFFF:7F00:1]/").host == "::ffff:7f00:1"
    assert parse_url("http://h/").port == 80
    assert parse_url("https://h/").port == 443


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://h:99999/",
        "http://h:0/",
        "http://h:port/",
        "ftp://h/",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http:///path",
        "http://256.0.0.1/",
        "http://1.2.3.4.5/",
        "http://0x1ffffffff/",
        "http://[fe80::1%25eth0]/",
        "http://[not-v6]/",
    ],
)
def test_urls_no_client_could_fetch_are_bad(url: str) -> None:
    with pytest.raises(BadUrl):
        parse_url(url)
