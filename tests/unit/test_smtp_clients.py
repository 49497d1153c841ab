"""What SMTP sessions are counted under, per client (``smtp.max_connections_per_client``)."""

from __future__ import annotations

import pytest

from gateway.smtp_server import Sessions, client_key


@pytest.mark.parametrize(("address", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack listener sees IPv4 clients so
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::1", "::/64"),
    ("/run/helpdesk/smtp.sock", "/run/helpdesk/smtp.sock"),
])
def test_ipv4_clients_count_by_address_and_ipv6_clients_by_their_64(address, key):
    assert client_key(address) == key


def test_one_ipv6_network_cannot_take_more_sessions_by_changing_address():
    sessions = Sessions(most=10, most_per_client=2)
    admitted = [sessions.admit(client_key(f"2001:db8:1:2::{n}")) for n in range(1, 4)]
    assert admitted == [True, True, False]
    assert sessions.admit(client_key("2001:db8:1:3::1"))
