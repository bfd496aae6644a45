"""The one exception kvmhook raises when it could not do its job."""

from __future__ import annotations


class KvmhookError(Exception):
    """kvmhook could not do its job: bad arguments, a root it cannot use, or a fix it could
    not make. str(error) is one line for a person. intact is True when kvmhook knows that
    every original file is as it was."""

    def __init__(self, message: str, intact: bool = False):
        super().__init__(message)
        self.intact = intact
