"""The error hierarchy: every expected failure is a B2CError with a hint a person can act on."""

from __future__ import annotations


class B2CError(Exception):
    """Base of every expected failure. ``hint`` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(B2CError):
    """Invalid options or configuration."""

    exit_code = 2


class ResolveError(B2CError):
    """A package or dependency cannot be found in the archive index."""


class FetchError(B2CError):
    """A download failed (network, HTTP status, timeout)."""


class MissingError(FetchError):
    """The mirror answered 404 Not Found: it lacks a file (one its index may well list)."""


class VerifyError(B2CError):
    """A signature, checksum or size does not match: the input is not trusted."""


class ExtractError(B2CError):
    """A package is malformed or tries to write outside its target."""


class RootfsError(B2CError):
    """The rootfs manifest is inconsistent (conflicting entries, missing files)."""


class SizeError(B2CError):
    """The image is larger than allowed."""


class ToolError(B2CError):
    """A host tool is missing or failed."""


class BootError(B2CError):
    """A boot cannot even start: QEMU is missing or cannot be executed.

    Its exit code is console.ExitCode.QEMU_FAILED (253), the code ``b2c-builder run`` also
    uses when QEMU starts and then exits with an error of its own. How a boot that did start
    ended (timeout, panic, no status) is a RunResult, not an exception.
    """

    exit_code = 253


class ReportError(B2CError):
    """A report (the JUnit XML file) could not be written."""
