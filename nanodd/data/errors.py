"""The one exception the data layer lets reach a user."""


class DataError(Exception):
    """A user-facing data problem, with a one-line message the CLI prints as ``error: <msg>``."""
