"""Exceptions raised by ecomlogs."""


class EcomlogsError(Exception):
    """Root of every error raised by ecomlogs; catch this to handle them all."""


class DevStackError(EcomlogsError):
    """The local dev stack (python -m ecomlogs.devstack) could not start, stop or inspect a service."""
