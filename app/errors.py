"""Errors a person can act on, each with the exit status the README documents."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    CONFIG = 2  # bad flags or settings
    PARTIAL = 3  # ingest finished, but some files were skipped for errors
    PROVIDER = 4  # a model server is down, lacks the model, timed out or refused the input
    STORE = 5  # the vector store refused: another embedding model, another writer, unreachable


class LocalragError(Exception):
    """An error whose message is the whole story: printed without a traceback."""

    exit_code = ExitCode.UNEXPECTED


class ConfigError(LocalragError):
    exit_code = ExitCode.CONFIG


class ProviderError(LocalragError):
    exit_code = ExitCode.PROVIDER


class StoreError(LocalragError):
    exit_code = ExitCode.STORE


class StoreBusy(StoreError):
    """Another process holds the store's writer lock."""
