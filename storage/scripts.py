"""The Lua scripts of storage/lua/, and how they are sent to Redis."""

from __future__ import annotations

from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"


def load(name: str) -> str:
    """The script storage/lua/<name>.lua without its comment lines.

    The comments document the script; Redis would only be sent them with every call.
    """
    lines = (LUA / f"{name}.lua").read_text().splitlines()
    return "\n".join(line for line in lines if line.strip() and not line.lstrip().startswith("--")) + "\n"


def run(target, script: str, keys: list[str], args=()):
    """Queue (on a pipeline) or run a Lua script with a plain EVAL command.

    Not EVALSHA through redis-py's Script: in a pipeline that costs an extra SCRIPT EXISTS
    round trip every time, and cluster pipelines refuse EVALSHA and eval(). Redis caches the
    compiled script, so resending a few hundred bytes is the cheaper side.
    """
    return target.execute_command("EVAL", script, len(keys), *keys, *args)


ADMIT = load("admit")
RESOLVE_SESSION = load("resolve_session")
APPEND = load("append")
DELETE_CONVERSATION = load("delete_conversation")
UNMAP_SESSION = load("unmap_session")
COUNT_MESSAGE = load("count_message")
FORGET_MESSAGES = load("forget_messages")
ADD_EXPIRING = load("add_expiring")
TAKE_SIGN_IN_ATTEMPT = load("take_sign_in_attempt")
GIVE_BACK_SIGN_IN_ATTEMPT = load("give_back_sign_in_attempt")
PUT_KNOWLEDGE_DOCUMENT = load("put_knowledge_document")
