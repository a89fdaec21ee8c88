"""Engine-only domain errors (the shared ones live in :mod:`space.errors`)."""

from __future__ import annotations

from space.errors import SpaceError


class BadParameter(SpaceError):
    """A query-string parameter is missing, malformed or out of range."""

    code = "bad_parameter"


class NotFound(SpaceError):
    """The named image, report file or bundle version does not exist."""

    code = "not_found"
    status = 404


class UnknownVersion(NotFound):
    """The admin named a bundle version that is not published: the client's mistake, not a server fault."""

    code = "unknown_version"


class Busy(SpaceError):
    """Every worker is taken and the wait queue is full; retry shortly."""

    code = "busy"
    status = 503


class SlowUpload(SpaceError):
    """The request body did not arrive within the upload timeout (a slow or stalled client)."""

    code = "request_timeout"
    status = 408


class TooManyUploads(SpaceError):
    """This client already has as many uploads in flight as one client may."""

    code = "too_many_uploads"
    status = 429


class Unauthorized(SpaceError):
    """The admin token is missing or wrong."""

    code = "unauthorized"
    status = 401


class AdminDisabled(SpaceError):
    """No admin token is configured, so admin endpoints are off."""

    code = "admin_disabled"
    status = 403
