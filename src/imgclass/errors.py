"""Exceptions meant for people: each names what is wrong and where.

The CLI turns any ``ImgclassError`` into a one-line message and a non-zero exit
status; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class ImgclassError(Exception):
    """Base class of every error that the CLI reports without a traceback."""

    exit_code = 2


class DataFormatError(ImgclassError, ValueError):
    """An input file is not in the format it claims (or we detected).

    ``path`` names the file; ``where`` is an optional position in it such as
    ``"line 17"`` or ``"drawing 3"``.
    """

    def __init__(self, path: object, message: str, where: str | None = None) -> None:
        self.path = str(path)
        self.where = where
        self.reason = message
        location = f"{self.path}, {where}" if where else self.path
        super().__init__(f"{location}: {message}")


class DatasetError(ImgclassError):
    """A prepared dataset is missing, incomplete or inconsistent."""


class DownloadError(ImgclassError):
    """A download failed after its retries, or its content did not verify."""


class ConfigError(ImgclassError, ValueError):
    """A setting, recipe or command-line value is invalid."""


class ModelError(ImgclassError):
    """A model or bundle cannot be built, loaded or verified."""


class FeedbackError(ImgclassError):
    """The feedback store cannot do what was asked: an unknown id or status, a bad or
    unreachable database URL, a database that imgclass did not make."""


class RegistryError(ImgclassError):
    """The model registry cannot do what was asked: an unknown model name, version or
    alias, no previous champion to roll back to, a registered bundle that does not
    verify, or a registry store that cannot be reached."""


class BadInput(ValueError):
    """A request whose content cannot be used; becomes a 4xx (or 503/504) with this
    message and ``headers`` (e.g. ``Retry-After``).

    ``where`` names the place in the request when there is one (``strokes[2][0][5]``,
    ``items[3].strokes``); the message then reads ``<where>: <reason>``.
    """

    def __init__(
        self,
        message: str,
        status: int = 422,
        where: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.status, self.where, self.reason = status, where, message
        self.headers = headers

    def within(self, outer: str) -> BadInput:
        """The same error placed inside ``outer`` (a batch item: ``items[3]``)."""
        where = f"{outer}.{self.where}" if self.where else outer
        return BadInput(self.reason, self.status, where, self.headers)
