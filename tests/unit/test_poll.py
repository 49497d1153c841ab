"""Waiting on a socket whose descriptor is past select()'s FD_SETSIZE (``gateway.poll``)."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from gateway.poll import ready

HIGH = 1500


@pytest.fixture
def high_socket_pair():
    """A connected pair of sockets, the first one's descriptor numbered ``HIGH``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH:
        pytest.skip(f"the process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH + 1), hard))
    ours, theirs = socket.socketpair()
    os.dup2(ours.fileno(), HIGH)
    try:
        yield HIGH, theirs
    finally:
        os.close(HIGH)
        ours.close()
        theirs.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_socket_past_fd_setsize_is_waited_on_like_any_other(high_socket_pair):
    fd, peer = high_socket_pair
    assert ready(fd, 0, write=True)
    assert not ready(fd, 0.05)
    peer.sendall(b"250 OK\r\n")
    assert ready(fd, 1)


def test_a_hang_up_counts_as_ready_for_the_read_to_report(high_socket_pair):
    fd, peer = high_socket_pair
    peer.close()
    assert ready(fd, 1)
