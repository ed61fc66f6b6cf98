"""A 20-question conversation on the embedded default (SmolLM2-135M + all-MiniLM-L6-v2, the
sample documents), through the same session the terminal chat uses: how many turns were
answered, any error, and the size of the follow-up rewrite prompt and of the answer prompt at
each turn, in the chat model's own tokens, against its window.

    python benchmarks/long_conversation.py [--json benchmarks/results/long_conversation.json]

Questions and follow-ups are fixed below; each follow-up leans on the one before ("it", "that").
ANSWER_MODE=generate: the model writes each answer (the embedded default would extract them
without a model call, leaving no answer prompt to measure). Prompt sizes count every message's
text with SmolLM2's tokenizer plus the budget's 8 tokens per message for the chat template (the
accounting `chains/core/budget.py` fits to).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import load_settings
from app.errors import LocalragError
from app.evaluation.report import machine
from app.session.conversation import start_conversation
from app.session.resources import open_resources
from chains.core.answering import REWRITE_INSTRUCTIONS
from chains.core.budget import MESSAGE_OVERHEAD, context_window, token_counter
from chains.core.events import CollectedAnswer
from chains.core.registry import ChainSpec

CONVERSATION = [
    "Who founded the town of Brindlemoor?",
    "When did that happen?",
    "How long is Brindlemoor's harbour wall, the Long Mole?",
    "What is it made of?",
    "When is the Lantern Tide festival held in Brindlemoor?",
    "What happens during it?",
    "When does the first ferry leave?",
    "How much does a ticket cost?",
    "What is the name of the electric ferry?",
    "When was it launched?",
    "Who is the director of the Corvane Hill observatory?",
    "How large is its telescope mirror?",
    "What did the harbour notice announce?",
    "Why was that needed?",
    "What was decided at the ferry company's annual general meeting?",
    "Who chaired it?",
    "What does the observatory's annual report say about visitors?",
    "And about its budget?",
    "Summarise everything you told me about the ferry.",
    "Thank you. Which of those facts comes from the timetable?",
]


class PromptRecorder(BaseCallbackHandler):
    """Keeps the messages of every chat model call, in order."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        self.calls.extend(messages)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the turns and figures here")
    parser.add_argument("--store", type=Path, help="Chroma directory (default: a fresh temp one)")
    args = parser.parse_args()

    store = args.store or Path(tempfile.mkdtemp(prefix="long-conversation-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The model writes every answer (the embedded default extracts sentences without a model
    # call): what is measured is the prompts a generating model is given.
    settings = load_settings(
        embedding_provider="local",
        chat_provider="local",
        chroma_dir=store,
        chain="rag",
        answer_mode="generate",
    )
    at_start = machine()
    resources = open_resources(settings)
    session = start_conversation(resources, "rag")
    recorder = PromptRecorder()
    # The chain as the chat builds it, recording every prompt: also when the conversation
    # builds it again (it does before the first question, and whenever the library changes).
    spec = session.spec
    session.spec = ChainSpec(
        spec.name,
        spec.description,
        lambda s, r, m: spec.build(s, r, m).with_config(callbacks=[recorder]),
        spec.retrieval,
    )
    session.rebuild()
    count = token_counter(resources.model)
    window = context_window(resources.model, settings.chat_context_tokens)

    def tokens(messages: list[BaseMessage]) -> int:
        return sum(count(str(m.content)) + MESSAGE_OVERHEAD for m in messages)

    turns: list[dict[str, Any]] = []
    for number, question in enumerate(CONVERSATION, 1):
        before = len(recorder.calls)
        history_messages = len(session.history)
        started = time.perf_counter()
        collected, error = CollectedAnswer(searched=question), None
        try:
            for event in session.answer(question):
                collected.add(event)
        except LocalragError as exc:
            error = str(exc)
        seconds = time.perf_counter() - started
        answer, context, standalone = collected.text, collected.documents, collected.searched
        if error is None and context and not collected.not_found:
            session.remember(question, answer)
        calls = recorder.calls[before:]
        rewrite = next((c for c in calls if c[0].content == REWRITE_INSTRUCTIONS), None)
        answer_prompt = next((c for c in calls if c[0].content != REWRITE_INSTRUCTIONS), None)
        turn: dict[str, Any] = {
            "turn": number,
            "question": question,
            "standalone_question": standalone,
            "seconds": round(seconds, 1),
            "error": error,
            "history_messages": history_messages,
            "rewrite_prompt_tokens": tokens(rewrite) if rewrite else None,
            "rewrite_history_messages_kept": len(rewrite) - 2 if rewrite else None,
            "answer_prompt_tokens": tokens(answer_prompt) if answer_prompt else None,
            "answer_history_messages_kept": len(answer_prompt) - 2 if answer_prompt else None,
            "answer_tokens": count(answer),
            "sources": sorted({str(d.metadata.get("source")) for d in context}),
            "answer": answer,
        }
        turns.append(turn)
        print(
            f"{number:>2} {seconds:5.1f}s rewrite {turn['rewrite_prompt_tokens'] or '-':>5} "
            f"answer {turn['answer_prompt_tokens'] or '-':>5} history {history_messages:>2} "
            f"{'ERROR ' + error if error else answer[:60].replace(chr(10), ' ')!s}",
            flush=True,
        )
    session.close()
    resources.close()

    last = turns[-1]
    result: dict[str, Any] = {
        "command": "python benchmarks/long_conversation.py --json "
        "benchmarks/results/long_conversation.json",
        "machine": at_start | {"load_average_end": machine()["load_average"]},
        "chat_model": resources.capabilities.key,
        "embeddings": resources.embeddings.info.key,
        "context_window": window,
        "max_answer_tokens": settings.max_answer_tokens,
        "prompt_budget": window - settings.max_answer_tokens,
        "turns_asked": len(turns),
        "turns_answered": sum(t["error"] is None for t in turns),
        "errors": [t["error"] for t in turns if t["error"]],
        "largest_rewrite_prompt_tokens": max(t["rewrite_prompt_tokens"] or 0 for t in turns),
        "largest_answer_prompt_tokens": max(t["answer_prompt_tokens"] or 0 for t in turns),
        "last_turn": {k: last[k] for k in last if k != "answer"},
        "turns": turns,
    }
    print(
        f"\n{result['turns_answered']}/{len(turns)} turns answered, "
        f"{len(result['errors'])} errors; window {window}, budget {result['prompt_budget']}; "
        f"last turn: rewrite prompt {last['rewrite_prompt_tokens']} tokens, answer prompt "
        f"{last['answer_prompt_tokens']} tokens; largest {result['largest_rewrite_prompt_tokens']}"
        f" / {result['largest_answer_prompt_tokens']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
