"""The one wiring of the question path: settings -> embeddings, store, keyword index, chat model,
retriever and chain. `app.chat`, `app.eval` and `app.serve` all open a session here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from app.cli import chat_model_for, embeddings_for, status
from app.config import Settings
from app.errors import ConfigError
from app.keyword_index import KeywordIndex, open_keyword_index
from app.retrieval import DocumentRetriever, SourceFilter, allowed_sources
from app.sync import sync_collection
from app.vectorstore import connect, open_collection
from chains.budget import BudgetError
from chains.registry import ChainSpec, get_chain

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from langchain_core.language_models import BaseChatModel

    from app.chat_model import ChatModelInfo
    from app.embeddings import ModelEmbeddings


@dataclass
class Session:
    """Everything a conversation needs; the chain is rebuilt when the chain or filter changes."""

    settings: Settings
    embeddings: ModelEmbeddings
    collection: Collection
    keyword_index: KeywordIndex
    model: BaseChatModel
    model_info: ChatModelInfo
    spec: ChainSpec
    filters: list[SourceFilter] = field(default_factory=list)
    history: list[BaseMessage] = field(default_factory=list)
    last_context: list[Document] = field(default_factory=list)
    chain: Runnable | None = None

    def retriever(self) -> DocumentRetriever:
        s, wanted = self.settings, self.spec.retrieval
        k = s.retrieval_k or wanted.get("k") or self.model_info.default_k
        sources = allowed_sources(self.filters, self.keyword_index.sources())
        return DocumentRetriever(
            collection=self.collection,
            embeddings=self.embeddings,
            keyword_index=self.keyword_index,
            mode=s.retrieval_mode or wanted.get("mode", "similarity"),
            k=k,
            fetch_k=s.fetch_k or wanted.get("fetch_k") or 5 * k,
            score_threshold=(
                s.score_threshold
                if s.score_threshold is not None
                else self.embeddings.info.default_threshold
            ),
            allowed_sources=sources,
        )

    def rebuild(self) -> None:
        try:
            self.chain = self.spec.build(self.settings, self.retriever(), self.model)
        except BudgetError as exc:  # an unknown or too small context window: a setting to fix
            raise ConfigError(str(exc)) from None


def open_session(settings: Settings, chain_name: str, filters: list[SourceFilter]) -> Session:
    """Wire embeddings, store, keyword index, chat model and chain; ingest samples if empty."""
    spec = chain_spec(chain_name)
    embeddings = embeddings_for(settings)
    # The chat model is checked before a first ingest, so a missing one fails in seconds.
    model, model_info = chat_model_for(settings)
    client = connect(settings)
    collection = open_collection(client, settings, embeddings.info)
    if collection is None or collection.count() == 0:
        status(f"The collection is empty: ingesting {settings.docs_dir} first.")
        report = sync_collection(settings, [settings.docs_dir], embeddings)
        status(
            f"Ingested {len(report.new) + len(report.changed)} files "
            f"({report.chunks_added} chunks); {len(report.failed)} skipped."
        )
        collection = open_collection(client, settings, embeddings.info)
        if collection is None:
            raise ConfigError(f"Nothing could be ingested from {settings.docs_dir}.")
    keyword_index = open_keyword_index(settings.chroma_dir, collection.name)
    keyword_index.follow(collection)
    session = Session(
        settings, embeddings, collection, keyword_index, model, model_info, spec, filters
    )
    session.rebuild()
    return session


def chain_spec(name: str) -> ChainSpec:
    """The named chain, or a ConfigError listing the ones there are."""
    try:
        return get_chain(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
