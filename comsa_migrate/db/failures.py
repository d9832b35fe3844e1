"""Which failures to connect are settings that can never work, and which may pass.

libpq gives no SQLSTATE for a failed connection, only its message: these are told apart
by the words libpq, psycopg, PostgreSQL and PgBouncer use for them."""

from __future__ import annotations

__all__ = ["never_works"]

#: what a host that does not resolve, a database or role that does not exist, refused
#: credentials or an SSL connection that cannot be had say; a server that is down, starting,
#: full or slow says none of these
_NEVER_WORKS = (
    "failed to resolve host",  # psycopg's own resolver
    "could not translate host name",  # libpq's
    "does not exist",  # database "x" / role "x" does not exist
    "authentication failed",  # password, peer, ident, SASL, GSS...
    "no password supplied",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "is not permitted to log in",
    "permission denied for database",
    "server does not support ssl",
    "ssl was required",
    "certificate",  # the client's or the root certificate missing or refused
    "no such database",  # PgBouncer
    "no such user",  # PgBouncer
)


def never_works(exc: BaseException) -> bool:
    """True when ``exc``, from a failed connection, names a setting no retry can mend."""
    text = str(exc).lower()
    return any(words in text for words in _NEVER_WORKS)
