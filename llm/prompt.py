"""The prompt: the system message and the stored conversation, in a form every chat template
accepts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: knowledge.py finds the passages
    from knowledge import Passage


KNOWLEDGE_INSTRUCTION = (
    "Answer from the numbered passages below, which come from this site's own documents. Cite the "
    "passages you use by their numbers, like [1]. If they do not contain the answer, say that you do "
    "not know it rather than guessing."
)


def build_prompt(
    system_prompt: str, history: list[dict], max_chars: int, passages: Sequence[Passage] = ()
) -> list[dict]:
    """OpenAI chat messages for a turn: the system message (with the knowledge passages found
    for the turn, numbered from 1, and how to use them), then the newest stored messages
    (oldest first, `{"role", "content", "interrupted"?}`) whose contents fit in max_chars, made
    strictly alternating (see alternating)."""
    system = system_prompt
    if passages:
        numbered = "\n\n".join(f"[{n}] {p.title}\n{p.text}" for n, p in enumerate(passages, 1))
        system = f"{system_prompt}\n\n{KNOWLEDGE_INSTRUCTION}\n\n{numbered}"
    return [{"role": "system", "content": system}, *alternating(fit_history(history, max_chars))]


def fit_history(messages: list[dict], max_chars: int) -> list[dict]:
    """The newest messages whose contents fit in max_chars; the newest one is always kept."""
    kept: list[dict] = []
    total = 0
    for message in reversed(messages):
        total += len(message["content"])
        if kept and total > max_chars:
            break
        kept.append(message)
    return kept[::-1]


def alternating(messages: list[dict]) -> list[dict]:
    """Stored messages, oldest first, as a history every chat template accepts: strictly
    alternating user and assistant messages that start and end with a user message.

    Strict templates (Mistral, Gemma and others on vLLM, TGI and Ollama) refuse anything else
    with a 400, and what storage holds can break the pattern: a failed turn leaves a user
    message unanswered, an interrupted reply may be followed by the retry's full one, and the
    history window can start on a reply. So: leading replies are dropped; a run of user messages
    becomes one (an exact repeat is kept once); in a run of replies an interrupted one that a
    later reply replaced is dropped and the rest are joined; replies after the last user message
    (a retry's interrupted first attempt) are dropped.
    """
    runs: list[dict] = []  # {"role", "parts": [contents], "interrupted": of the last part}
    for message in messages:
        role, content, interrupted = message["role"], message["content"], bool(message.get("interrupted"))
        if not runs and role != "user":
            continue
        if not runs or runs[-1]["role"] != role:
            runs.append({"role": role, "parts": [content], "interrupted": interrupted})
        elif role == "assistant" and runs[-1]["interrupted"]:
            runs[-1]["parts"][-1], runs[-1]["interrupted"] = content, interrupted
        elif runs[-1]["parts"][-1] != content:
            runs[-1]["parts"].append(content)
    while runs and runs[-1]["role"] != "user":
        runs.pop()
    return [{"role": run["role"], "content": "\n\n".join(run["parts"])} for run in runs]
