"""The base of every error a user can cause and fix (bad params, bad data)."""


class AmazoniaError(Exception):
    """A problem with the user's input; the message says what, where and what to do."""
