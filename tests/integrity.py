"""Reads a session's conversation straight from Redis and checks that it is whole.

Used after faults and concurrent load: whatever happened, a stored conversation must be one
that the service could have written step by step.
"""

from __future__ import annotations

import storage
from storage.conversations import LAST_MESSAGE_CHARS


def stored_thread(client, session_id: str, prefix: str = "ocw") -> tuple[dict, list[dict]]:
    """(summary, messages) of the session's conversation, after checking they agree.

    Agree means: the session maps to a conversation that exists; messages are in the order
    they were written (createdAt never goes back); the summary's count, last message and
    updatedAt are those of the list; the listing index holds the conversation at updatedAt.
    """
    store = storage.Storage(client, prefix)
    conversation_id = client.get(store.keys.session(session_id))
    assert conversation_id, f"session {session_id} has no conversation"
    found = store.conversations.get(conversation_id)
    assert found is not None, f"session {session_id} maps to a missing conversation"
    summary, messages = found
    assert summary["sessionId"] == session_id
    assert messages, f"conversation of {session_id} is empty"
    times = [m["createdAt"] for m in messages]
    assert times == sorted(times), f"messages of {session_id} are out of order"
    assert summary["messageCount"] == len(messages)
    assert summary["lastMessage"] == messages[-1]["content"][:LAST_MESSAGE_CHARS]
    assert summary["updatedAt"] == messages[-1]["createdAt"]
    assert summary["createdAt"] == messages[0]["createdAt"]
    assert client.zscore(store.keys.index(), conversation_id) == summary["updatedAt"]
    return summary, messages


def assert_replies_answer_their_question(messages: list[dict]) -> None:
    """With the fake upstream's `echo`, each reply follows the message it answers.

    A turn whose earlier questions went unanswered (a failure) sends them joined into one user
    message, the newest last, so the echo is the end of that run, cut where the history window
    cut it. An interrupted reply is a beginning of the full answer; nothing from another turn or
    another session can sit in between.
    """
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        assert index and messages[index - 1]["role"] == "user", f"reply without its question: {message}"
        run: list[str] = []  # the user messages just before the reply, newest first
        for earlier in reversed(messages[:index]):
            if earlier["role"] != "user":
                break
            if not run or run[-1] != earlier["content"]:
                run.append(earlier["content"])
        expected = ["echo: " + "\n\n".join(reversed(run[:n])) for n in range(1, len(run) + 1)]
        if message.get("interrupted"):
            assert any(e.startswith(message["content"]) for e in expected), message
        else:
            assert message["content"] in expected, (run, message)
