"""A chat-completions event stream (server-sent events) read into text deltas."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Generator, Iterator

import urllib3

from .errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .reply_stream import StreamFacts
from .transport import release

# Event-stream lines end with CRLF, LF or CR (WHATWG HTML, "Parsing an event stream").
_LINE_END = re.compile(r"\r\n|\r|\n")


_SURROGATE = re.compile("[\ud800-\udfff]")


class _Unterminated(str):
    """The last piece of a body that ended in the middle of a line."""


def _event_stream_lines(response: urllib3.BaseHTTPResponse) -> Iterator[str]:
    """Lines of an event-stream body, each as soon as it arrives, decoded and split as the
    WHATWG HTML standard's "Parsing an event stream" does: UTF-8 with U+FFFD for bytes that are
    not UTF-8 (the rest goes on), a leading BOM dropped, and lines ending with CRLF, LF or CR.

    Reading fixed-size blocks (as requests' iter_lines() does) would hold early tokens of an
    unchunked body back until enough later ones arrive; read1() returns whatever is there. A
    body that ends in the middle of a line yields that piece last, as an _Unterminated.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending, started = "", False
    while data := response.read1(8192):
        text = pending + decoder.decode(data)
        if not started and text:
            text, started = text.removeprefix("\ufeff"), True
        # A CR at the very end may be the first half of a CRLF split across two reads.
        cut = len(text) - 1 if text.endswith("\r") else len(text)
        *complete, rest = _LINE_END.split(text[:cut])
        pending = rest + text[cut:]
        yield from complete
    pending += decoder.decode(b"", final=True)
    if pending.endswith("\r"):
        yield pending[:-1]
    elif pending:
        yield _Unterminated(pending)


def output_tokens(chunk: dict) -> int | None:
    usage = chunk.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and tokens >= 0 else None


def finish_reason(choice) -> str | None:
    reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    return reason if isinstance(reason, str) and reason else None


def chat_deltas(response: urllib3.BaseHTTPResponse, facts: StreamFacts, upstream_message) -> Generator[str, None, None]:
    """Text deltas from a chat-completions event stream, read as tolerantly as a browser would
    and as the original backend does (a TextDecoder and JSON.parse per `data:` line).

    - Comments, blank lines and fields other than `data` are ignored; `data:` lines that are
      not JSON are skipped and counted in facts.skipped_lines (a JSON value split over several
      `data:` lines of one event, as the standard allows, is joined first).
    - A JSON escape can split one character into two UTF-16 halves across chunks (`"\\ud83d"`,
      then `"\\ude00"`): the first half is held back and joined with the second, as a
      JavaScript client's string concatenation does; a half that stays alone becomes U+FFFD.
    - `[DONE]` or a chunk with a `finish_reason` marks a complete reply (servers send one, the
      other or both); a stream that ends with neither, or in the middle of a line, raises
      UpstreamProtocolError. An `error` object in the stream raises UpstreamError.

    Reported output tokens and the finish reason go into facts. The response is closed when the
    generator ends, fails or is closed.
    """
    event_data: list[str] = []  # data lines of the current event not yet readable as JSON
    held = ""  # a first UTF-16 half waiting for its second
    complete = False
    try:
        for line in _event_stream_lines(response):
            if isinstance(line, _Unterminated) and _cut_data_line(line):
                if complete:  # e.g. a usage chunk cut after the finish_reason: the reply is whole
                    facts.skipped_lines += 1
                    break
                raise UpstreamProtocolError(
                    "The model stream was cut off", "the model stream ended in the middle of a line"
                )
            if not line:  # the end of an event
                facts.skipped_lines += len(event_data)
                event_data.clear()
                continue
            field, _, value = line.partition(":")
            if field != "data":
                continue  # a comment (no field name), event, id, retry or an unknown field
            value = value.removeprefix(" ")
            if not value.strip():
                continue  # an empty data line dispatches nothing (the standard), skips nothing
            if value.strip() == "[DONE]":
                complete = True
                break
            chunk = _read_data_line(value, event_data, facts)
            if chunk is None:
                continue
            if chunk.get("error"):
                raise UpstreamError(
                    "The model failed to answer. Please try again.",
                    f"the model server sent an error in its stream: {upstream_message(chunk)}",
                )
            if output_tokens(chunk) is not None:
                facts.output_tokens = output_tokens(chunk)
            choice = _first_choice(chunk)
            if finish_reason(choice) is not None:
                facts.finish_reason, complete = finish_reason(choice), True
            delta, held = _joined_halves(held + _delta_text(choice))
            if delta:
                yield delta
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise UpstreamTimeout("The model stopped answering", "the model server was silent too long mid-stream") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise UpstreamError("The connection to the model failed", f"the model stream broke ({exc})") from exc
    finally:
        release(response)
    facts.skipped_lines += len(event_data)
    if held:
        yield "\ufffd"
    if not complete:
        raise UpstreamProtocolError(
            "The model stream ended before the reply was complete",
            "the model stream ended with neither [DONE] nor a finish_reason",
        )


def _cut_data_line(line: str) -> bool:
    """True for a `data:` line that the end of the body cut short (it does not parse)."""
    field, _, value = line.partition(":")
    if field != "data" or value.strip() == "[DONE]":
        return False
    try:
        json.loads(value)
    except ValueError:
        return True
    return False


def _read_data_line(value: str, event_data: list[str], facts: StreamFacts) -> dict | None:
    """The chunk a `data:` line completes, or None (kept in event_data, or skipped if not a chunk).

    One JSON object per line is what servers send; the standard also allows one value over
    several data lines of an event, joined with LF.
    """
    try:
        chunk = json.loads(value)
    except ValueError:
        chunk = None
    if isinstance(chunk, dict):
        facts.skipped_lines += len(event_data)  # whatever came before was not part of it
        event_data.clear()
        return chunk
    event_data.append(value)
    try:
        chunk = json.loads("\n".join(event_data))
    except ValueError:
        return None
    event_data.clear()
    if not isinstance(chunk, dict):
        facts.skipped_lines += 1
        return None
    return chunk


def _first_choice(chunk: dict) -> dict:
    choices = chunk.get("choices")
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}


def _delta_text(choice: dict) -> str:
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""  # role-only, usage-only and other chunks


def _joined_halves(text: str) -> tuple[str, str]:
    """(text ready to send, a trailing first UTF-16 half held back for the next delta).

    JSON can carry lone UTF-16 halves (surrogates) that UTF-8 cannot: a pair is joined into its
    character, a lone half becomes U+FFFD, so the client's stream stays valid UTF-8.
    """
    if not _SURROGATE.search(text):
        return text, ""
    held = ""
    if "\ud800" <= text[-1] <= "\udbff":
        text, held = text[:-1], text[-1]
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), held
