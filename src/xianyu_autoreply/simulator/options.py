"""Behaviour switches of one simulator, shared by its parts; mutable so the control API can flip them live."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Options:
    echo_sends: bool = True  # push a seller's accepted send back to all its connections (PROTOCOL §19.12)
    verify_sign: bool = True  # check the MTOP sign (§2.2) against the request's _m_h5_tk
    slow_delay: float = 1.0  # seconds a `slow` fault holds each answer back when the fault names no delay
    idle_timeout: float | None = 300.0  # close a connection silent this long (§19.11 asks for >= 180 s); None = never
    compress: bool = False  # permessage-deflate: optional on the platform, and ~300 KB per connection with zlib
    close_timeout: float = 2.0  # how long a server-initiated close waits for the client's close frame
    # A push no connection of the seller acknowledged is pushed again to the seller's next connection, after its
    # ackDiff (inferred platform behaviour: docs/protocol-delivery.md). Pushes made while no connection is
    # registered are not kept: the platform does not replay chat pushes to a client that was offline.
    redeliver_unacked: bool = True
