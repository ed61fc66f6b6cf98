"""Removing sources, and finishing what a killed run left half done. Each step is recorded in
the library before it starts, so a run killed anywhere is completed by the next one."""

from __future__ import annotations

from app.config import Settings
from app.errors import ConfigError
from app.indexing.planning import plan_remove
from app.indexing.reports import RemoveReport, SourceReport
from app.store import open_store
from app.store.base import Selection
from app.store.catalog import delete_catalog, open_catalog
from app.store.keyword_index import DIRTY, delete_keyword_index, open_keyword_index
from app.store.library import Library, library_to_show
from app.store.lock import writer_lock


def remove_sources(settings: Settings, model: str, args: list[str]) -> RemoveReport:
    """Forget sources and delete their chunks (no embedding model needed). The record drops them
    first, so a run killed half-way finishes the deletion next time instead of re-adding them."""
    store = open_store(settings)
    with writer_lock(settings, store):
        library = library_to_show(store, settings, model)
        if library is None or not library.sources:
            raise ConfigError("The library has no sources to remove.")
        notes = finish_interrupted(settings, library)
        chosen = plan_remove(library, args)
        for source in chosen:
            library.drop(source.label)
        library.save()
        removed = purge_removed(settings, library)
        return RemoveReport(
            library.name,
            [SourceReport(s.label, s.path, "removed", s.files, s.chunks) for s in chosen],
            removed,
            notes,
        )


def finish_interrupted(settings: Settings, library: Library) -> list[str]:
    """Complete what a killed run left half done: a --rebuild's partial collection is deleted
    (the library still points at the complete one), replaced collections and removed sources'
    chunks are deleted."""
    notes = []
    record, store = library.record, library.store
    if record.building:
        store.drop_collection(record.building)
        delete_keyword_index(settings, store, record.building)
        delete_catalog(settings, store.key, record.building)
        notes.append(
            f"Deleted the partial collection {record.building} left by an interrupted --rebuild; "
            f"the library still uses {record.active}."
        )
        record.building = None
        library.save()
    if record.retired:
        for name in record.retired:
            store.drop_collection(name)
            delete_keyword_index(settings, store, name)
            delete_catalog(settings, store.key, name)
        record.retired = []
        library.save()
    if record.removing:
        purge_removed(settings, library)
    return notes


def purge_removed(settings: Settings, library: Library) -> int:
    """Delete the chunks (and keyword rows) of the sources the record lists as being removed."""
    record = library.record
    removed = 0
    collection = library.collection()
    index = (
        open_keyword_index(settings, library.store, collection) if collection is not None else None
    )
    catalog = open_catalog(settings, library.store.key, record.active)
    for label in list(record.removing):
        if collection is not None:
            ids = [chunk_id for chunk_id, _ in collection.rows(Selection(root=label))]
            if index is not None:
                index.mark(label, DIRTY)
            collection.delete(ids)
            removed += len(ids)
        if index is not None:
            index.forget(label)
        catalog.forget(label)
        record.removing.remove(label)
    if removed:
        record.generation += 1
    library.save()
    if index is not None:
        index.close()
    catalog.close()
    return removed
