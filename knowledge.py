"""The knowledge base: documents cut into chunks on their structure, and each worker's search
index over every chunk, so a chat turn can give the model the passages that answer it.

Ranking is BM25 through tantivy (a well-kept Rust search library, in memory, English stemming);
when EMBEDDING_MODEL is set, the chunks' embeddings (computed once, at ingestion) are ranked by
cosine similarity too and the two rankings are fused (reciprocal rank fusion, k = 60, as
Elasticsearch and OpenSearch do). Long work lets the worker's other requests run every few
milliseconds (greenlets.py): chunking and reading chunks pause between small pieces, and
indexing, Rust that releases the GIL most of the time, runs in gevent's pool of native threads.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import tantivy
from bs4 import BeautifulSoup
from markdown_it import MarkdownIt

from config import JS_WHITESPACE, http_url
from greenlets import let_others_run, off_the_event_loop
from storage import StoredChunk

FORMATS = ("markdown", "text", "html")
FILE_FORMATS = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html"}
DOCUMENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a session id's rule
DOCUMENT_ID_RULE = "must be 1-128 characters of A-Z a-z 0-9 . _ : -"
MAX_TITLE_CHARS = 200
# A document's link: what openapi.json's pattern says (an ASCII host), and a valid port (http_url).
HTTP_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?")
MAX_CONTENT_BYTES = 2 * 1024 * 1024
EMBEDDING_BATCH = 64  # chunks per embeddings request at ingestion
CHUNK_CHARS = 1200  # a chunk's body, at most (a block longer than this is cut at word boundaries)
OVERLAP_CHARS = 200  # of the previous chunk's end, repeated at the start of the next in a section
PIECE_CHARS = 4000  # Markdown is parsed this much at a time (a few ms), yielding between pieces
YIELD_EVERY_CHUNKS = 50  # chunks read and indexed between two yields (a few ms)
CANDIDATES = 50  # of each ranking, before fusion
RRF_K = 60
ANALYZER = "english_words"
HTML_BLOCKS = ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "tr", "dt", "dd", "figcaption"]
_BLANK_LINES = re.compile(r"\n\s*\n")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)", re.M)


class InvalidDocument(Exception):
    """A document broke a rule; details name each bad field."""

    def __init__(self, details: dict):
        super().__init__(details)
        self.details = details


@dataclass(frozen=True)
class Document:
    """A valid knowledge document, as the admin API, the dashboard and the CLI take it."""

    id: str
    title: str
    url: str | None
    content: str
    format: str = "markdown"


def document(document_id: str, body: object) -> Document:
    """The document a PUT body describes (`{"title", "url"?, "content", "format"?}`), or
    InvalidDocument naming every bad field."""
    details = {}
    if not DOCUMENT_ID.fullmatch(document_id):
        details["id"] = DOCUMENT_ID_RULE
    if not isinstance(body, dict):
        raise InvalidDocument({**details, "body": "must be a JSON object"})
    title, url, content = body.get("title"), body.get("url"), body.get("content")
    fmt = body.get("format", "markdown")
    # "Only whitespace" as openapi.json's `\S` patterns mean it (chat messages are held to the same).
    if not isinstance(title, str) or not 1 <= len(title.strip(JS_WHITESPACE)) <= MAX_TITLE_CHARS or not _unicode(title):
        details["title"] = f"must be a string of 1-{MAX_TITLE_CHARS} characters"
    if url is not None and not (isinstance(url, str) and HTTP_URL.fullmatch(url) and http_url(url)):
        details["url"] = "must be null or an http:// or https:// URL"
    if not isinstance(content, str) or not _unicode(content) or len(content.encode()) > MAX_CONTENT_BYTES:
        details["content"] = "must be a string of at most 2 MB (UTF-8)"
    elif not content.strip(JS_WHITESPACE):
        details["content"] = "must have some text"
    if fmt not in FORMATS:
        details["format"] = "must be one of " + ", ".join(FORMATS)
    if details:
        raise InvalidDocument(details)
    assert isinstance(title, str) and isinstance(content, str) and isinstance(fmt, str)  # checked above
    return Document(document_id, title.strip(JS_WHITESPACE), url, content, fmt)


def from_file(name: str, data: bytes, url: str | None = None) -> Document:
    """The document of a file: its format from its extension (FILE_FORMATS), its id from its
    name (a path relative to the folder it was found in) with other characters than those of
    DOCUMENT_ID made "-", its title from its first heading (HTML: <title>; text: a short first
    line), else its name. Raises InvalidDocument (not one of those formats, not UTF-8 text)."""
    path = PurePosixPath(name)
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidDocument({"file": "must be a .md, .markdown, .txt, .html or .htm file"})
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidDocument({"file": "must be UTF-8 text (save it as UTF-8 first)"}) from None
    title = (title_of(content, fmt) or path.stem)[:MAX_TITLE_CHARS]
    fields = {"title": title, "content": content, "format": fmt, "url": url}
    return document(re.sub(r"[^A-Za-z0-9._:-]", "-", name)[:128], fields)


def _unicode(text: str) -> bool:
    """False for strings JSON can carry but UTF-8 cannot (lone surrogates)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Passage:
    """A chunk found for a turn, with the document it comes from."""

    document_id: str
    title: str
    url: str | None
    text: str


# ---- chunking ------------------------------------------------------------------------------


def chunk(content: str, fmt: str) -> list[str]:
    """The chunks of a document: its blocks (paragraphs, lists, code, tables) packed in order
    into pieces of at most CHUNK_CHARS within one section, each starting with its section's
    heading path ("Returns > Refunds") and, after the first, with the end of the chunk before.
    """
    chunks: list[str] = []
    for headings, texts in _sections(content, fmt):
        prefix = " > ".join(headings)
        body = ""
        for text in _fitting(texts):
            if body and len(body) + 2 + len(text) > CHUNK_CHARS:
                chunks.append(_with_prefix(prefix, body))
                body = _tail(body)
            body = f"{body}\n\n{text}" if body else text
        if body:
            chunks.append(_with_prefix(prefix, body))
    return chunks


def title_of(content: str, fmt: str) -> str | None:
    """A document's first heading (Markdown), its <title> or first <h1> (HTML), or its first line
    when that is short (text), read from its beginning; None when it has none."""
    if fmt == "html":
        soup = BeautifulSoup(content[: PIECE_CHARS * 5], "html.parser")
        found = soup.title or soup.find("h1")
        return (found.get_text(" ", strip=True) or None) if found is not None else None
    if fmt == "markdown":
        for headings, _ in _sections(content[:PIECE_CHARS], fmt):
            if headings:
                return headings[0]
    if fmt == "text":
        first = content.lstrip().split("\n", 1)[0].strip()
        return first if 0 < len(first) <= 80 else None
    return None


def _sections(content: str, fmt: str) -> Iterable[tuple[list[str], list[str]]]:
    """(heading path, block texts) for each run of blocks under one heading."""
    if fmt == "markdown":
        return _markdown_sections(content)
    if fmt == "html":
        return _html_sections(content)
    return [([], [block.strip() for block in _BLANK_LINES.split(content) if block.strip()])]


def _markdown_sections(content: str) -> Iterable[tuple[list[str], list[str]]]:
    parser = MarkdownIt("commonmark").enable("table")
    headings: list[str] = []
    texts: list[str] = []
    for piece in _pieces(content):
        lines = piece.splitlines()
        tokens = parser.parse(piece)
        for i, token in enumerate(tokens):
            if token.level != 0 or token.map is None or token.type.endswith("_close"):
                continue
            if token.type == "heading_open":
                if texts:
                    yield list(headings), texts
                    texts = []
                depth = int(token.tag[1])
                headings = [*headings[: depth - 1], tokens[i + 1].content.strip()]
            else:
                text = "\n".join(lines[token.map[0] : token.map[1]]).strip()
                if text:
                    texts.append(text)
        let_others_run()  # between pieces
    if texts:
        yield list(headings), texts


def _pieces(content: str) -> Iterable[str]:
    """content in pieces of about PIECE_CHARS, cut at blank lines outside fenced code."""
    start = 0
    while start < len(content):
        end = len(content)
        if end - start > PIECE_CHARS:
            cut = content.find("\n\n", start + PIECE_CHARS)
            while cut != -1 and len(_FENCE.findall(content, start, cut)) % 2:
                cut = content.find("\n\n", cut + 2)
            end = len(content) if cut == -1 else cut + 2
        yield content[start:end]
        start = end


def _html_sections(content: str) -> Iterable[tuple[list[str], list[str]]]:
    soup = BeautifulSoup(content, "html.parser")
    for hidden in soup(["script", "style", "noscript", "template", "head"]):
        hidden.decompose()
    headings: list[str] = []
    texts: list[str] = []
    # The outermost blocks: an inner one's text is part of the enclosing block's.
    blocks = [element for element in soup.find_all(HTML_BLOCKS) if element.find_parent(HTML_BLOCKS) is None]
    for n, element in enumerate(blocks):
        text = element.get_text(" ", strip=True)
        element.extract()  # what is left afterwards is the text outside every block
        if element.name[0] == "h" and element.name[1:].isdigit():
            if texts:
                yield list(headings), texts
                texts = []
            headings = [*headings[: int(element.name[1]) - 1], text]
        elif text:
            texts.append(text)
        if n % 200 == 199:
            let_others_run()
    # Text outside blocks (bare text, <div>s of text) is kept too, after the blocks.
    loose = soup.get_text("\n", strip=True)
    if loose:
        texts.append(loose)
    if texts:
        yield list(headings), texts


def _fitting(texts: list[str]) -> Iterable[str]:
    """The blocks, each cut at word boundaries into parts of at most CHUNK_CHARS."""
    for text in texts:
        while len(text) > CHUNK_CHARS:
            cut = text.rfind(" ", 0, CHUNK_CHARS)
            cut = cut if cut > CHUNK_CHARS // 2 else CHUNK_CHARS
            yield text[:cut].rstrip()
            text = text[max(cut - OVERLAP_CHARS, 0) :].lstrip()
        yield text


def _tail(body: str) -> str:
    """The last OVERLAP_CHARS of a chunk's body, from a word boundary."""
    tail = body[-OVERLAP_CHARS:]
    space = tail.find(" ")
    return tail[space + 1 :] if 0 <= space < len(tail) // 2 else tail


def _with_prefix(prefix: str, body: str) -> str:
    return f"{prefix}\n{body}" if prefix else body


# ---- search --------------------------------------------------------------------------------


def pack_vector(vector: list[float]) -> str:
    """An embedding as stored with its chunk: base64 of little-endian float32."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


class SearchIndex:
    """Every chunk of every document, searchable in memory."""

    def __init__(self, chunks: Iterable[StoredChunk]):
        self.chunks: list[StoredChunk] = []
        vectors: list[np.ndarray | None] = []
        for n, found in enumerate(chunks):  # read from Redis as it goes, a slice at a time
            self.chunks.append(found)
            vectors.append(_vector(found.vector))
            if n % YIELD_EVERY_CHUNKS == YIELD_EVERY_CHUNKS - 1:
                let_others_run()
        # Indexing (hundreds of ms for 10,000 chunks) runs outside the worker's event loop: tantivy's
        # own indexing thread takes the GIL back and forth while it works, which would stall it.
        self._index, self._searcher = off_the_event_loop(self._write)
        self._vectors = _unit_rows(vectors) if vectors and all(v is not None for v in vectors) else None

    def _write(self) -> tuple[tantivy.Index, tantivy.Searcher]:
        """A new in-memory index of self.chunks (english_words), and its searcher."""
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("title", tokenizer_name=ANALYZER)
        builder.add_text_field("text", tokenizer_name=ANALYZER)
        builder.add_integer_field("n", stored=True, indexed=False)
        index = tantivy.Index(builder.build())
        index.register_tokenizer(ANALYZER, english_words())
        writer = index.writer(heap_size=60_000_000, num_threads=1)
        for n, found in enumerate(self.chunks):
            writer.add_document(tantivy.Document(title=found.title, text=found.text, n=n))
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        return index, index.searcher()

    def __len__(self) -> int:
        return len(self.chunks)

    def search(self, query: str, k: int, query_vector: list[float] | None = None) -> list[Passage]:
        """The k chunks that best answer query: BM25, fused with cosine similarity to
        query_vector when both it and the chunks' embeddings are there."""
        rankings = [self.lexical_ranking(query)]
        if query_vector is not None and self._vectors is not None:
            rankings.append(self.semantic_ranking(query_vector))
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, n in enumerate(ranking):
                fused[n] = fused.get(n, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused, key=lambda n: (-fused[n], n))[:k]
        return [Passage(c.document_id, c.title, c.url, c.text) for c in (self.chunks[n] for n in best)]

    def lexical_ranking(self, query: str) -> list[int]:
        """Positions in self.chunks of the CANDIDATES best chunks by BM25, best first."""
        parsed, _errors = self._index.parse_query_lenient(_plain(query), ["title", "text"])
        hits = self._searcher.search(parsed, CANDIDATES).hits
        return [self._searcher.doc(address)["n"][0] for _score, address in hits]

    def semantic_ranking(self, query_vector: list[float]) -> list[int]:
        """Positions in self.chunks of the CANDIDATES chunks whose embeddings are closest to
        query_vector (cosine), best first. Only for an index whose chunks all have one."""
        assert self._vectors is not None
        query = np.asarray(query_vector, dtype=np.float32)
        scores = self._vectors @ (query / (np.linalg.norm(query) or 1.0))
        top = np.argpartition(-scores, min(CANDIDATES, len(scores) - 1))[:CANDIDATES]
        return [int(n) for n in top[np.argsort(-scores[top])]]


def english_words() -> tantivy.TextAnalyzer:
    """How text becomes search terms: words lower-cased, English stop words dropped ("the",
    "is", "what": without that, "What is the weather today?" found passages about anything),
    then stemmed ("refunds" finds "refund"). tantivy's own filters and word lists."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _plain(query: str) -> str:
    """The words of a visitor's message, without anything tantivy's query language reads as syntax."""
    return " ".join(re.findall(r"\w+", query))


def _vector(packed: str | None) -> np.ndarray | None:
    """A chunk's stored embedding (pack_vector's form), or None."""
    return np.frombuffer(base64.b64decode(packed), dtype="<f4") if packed else None


def _unit_rows(vectors: list) -> np.ndarray:
    """The vectors as the rows of a matrix, each scaled to length 1 (cosine = dot product)."""
    rows = np.stack(vectors).astype(np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)


class Library:
    """A worker's search index, rebuilt from Redis when the knowledge version moves.

    While one request rebuilds it, the others keep searching the previous index.
    """

    def __init__(self) -> None:
        self._index: SearchIndex | None = None
        self._version: str | None = None
        self._rebuilding = threading.Lock()

    def index(self, version: str, load: Callable[[], Iterable[StoredChunk]]) -> SearchIndex | None:
        """The index of this version of the documents; load() gives their chunks for a rebuild."""
        if version != self._version and self._rebuilding.acquire(blocking=self._index is None):
            try:
                if version != self._version:
                    self._index, self._version = SearchIndex(load()), version
            finally:
                self._rebuilding.release()
        return self._index
