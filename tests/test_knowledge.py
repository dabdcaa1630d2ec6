"""Knowledge documents: chunking, the admin API, and answers from the site's own content."""

from __future__ import annotations

import io
import json

import pytest

import knowledge
import services
from tests.support import admin_headers, chat_headers, chat_turn
from tests.test_dashboard import form_token, page_text, signed_in

KNOWLEDGE = "/v1/admin/knowledge"
REFUNDS = """# Store policies

## Refunds

Unopened items can be returned within 30 days of delivery for a full refund to the original card.

## Shipping

Standard shipping to the Netherlands takes 2-4 business days. Express delivery costs 12 euros.
"""
WARRANTY = "# Warranty\n\nEvery kettle carries a two-year warranty against manufacturing defects."
GADGET = "# The Gadget Pro\n\nThe Gadget Pro is our flagship blender. It costs 149 euros and comes in red and black."


def put(client, document_id, content, title="Doc", **fields):
    body = {"title": title, "content": content, **fields}
    return client.put(f"{KNOWLEDGE}/{document_id}", json=body, headers=admin_headers())


def system_message(upstream) -> str:
    return upstream.requests[-1]["messages"][0]["content"]


# ---- chunking ------------------------------------------------------------------------------


def test_markdown_is_cut_on_its_headings_and_each_chunk_names_its_section():
    chunks = knowledge.chunk(REFUNDS, "markdown")
    assert chunks == [
        "Store policies > Refunds\nUnopened items can be returned within 30 days of delivery for a full refund to "
        "the original card.",
        "Store policies > Shipping\nStandard shipping to the Netherlands takes 2-4 business days. Express delivery "
        "costs 12 euros.",
    ]


def test_a_long_section_is_packed_into_chunks_that_overlap():
    paragraphs = [f"Paragraph {i} " + "word " * 60 for i in range(12)]
    chunks = knowledge.chunk("# Guide\n\n" + "\n\n".join(paragraphs), "markdown")
    assert len(chunks) > 1
    assert all(len(chunk) <= knowledge.CHUNK_CHARS + len("Guide\n") for chunk in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        overlap = after.removeprefix("Guide\n").split("\n\n")[0]  # the next starts with the end of this one
        assert before.endswith(overlap) and knowledge.OVERLAP_CHARS // 2 <= len(overlap) <= knowledge.OVERLAP_CHARS
    assert all(f"Paragraph {i} " in "".join(chunks) for i in range(12))


def test_html_is_read_as_text_by_its_headings_without_scripts_or_styles():
    html = (
        "<html><head><title>Help</title><style>p{}</style></head><body><h1>Help</h1><script>alert(1)</script>"
        "<h2>Returns</h2><p>Send it back <b>within</b> 30 days.</p><ul><li>Keep the box</li></ul></body></html>"
    )
    assert knowledge.chunk(html, "html") == ["Help > Returns\nSend it back within 30 days.\n\nKeep the box"]
    assert knowledge.title_of(html, "html") == "Help"


def test_html_text_outside_block_elements_is_kept():
    html = "<body><h1>Help</h1>Bare text<div>Text in a div</div><p>A paragraph</p></body>"
    assert knowledge.chunk(html, "html") == ["Help\nA paragraph\n\nBare text\nText in a div"]
    assert knowledge.chunk("words and no tags", "html") == ["words and no tags"]


def test_a_fenced_code_block_is_never_cut_in_two():
    code = "```\n" + "\n\n".join(f"line {i}" for i in range(3000)) + "\n```"
    pieces = list(knowledge._pieces("intro\n\n" + code + "\n\nafter"))
    assert any(code in piece for piece in pieces)


# ---- the admin API -------------------------------------------------------------------------


def test_a_document_is_stored_listed_read_and_deleted(client):
    response = put(client, "policies.md", REFUNDS, title="Store policies", url="https://shop.example/policies")
    assert response.status_code == 200
    assert response.get_json() == {"id": "policies.md", "chunks": 2}

    listing = client.get(KNOWLEDGE, headers=admin_headers()).get_json()
    (entry,) = listing["documents"]
    assert entry["id"] == "policies.md" and entry["chunks"] == 2 and entry["url"] == "https://shop.example/policies"
    assert listing["nextCursor"] is None and "content" not in entry

    document = client.get(f"{KNOWLEDGE}/policies.md", headers=admin_headers()).get_json()
    assert (document["title"], document["content"], document["format"]) == ("Store policies", REFUNDS, "markdown")

    assert client.delete(f"{KNOWLEDGE}/policies.md", headers=admin_headers()).status_code == 204
    assert client.get(f"{KNOWLEDGE}/policies.md", headers=admin_headers()).status_code == 404
    assert client.delete(f"{KNOWLEDGE}/policies.md", headers=admin_headers()).status_code == 404


def test_the_listing_pages_in_id_order_with_a_cursor(client):
    for i in range(5):
        assert put(client, f"doc-{i}", f"text {i}").status_code == 200
    first = client.get(KNOWLEDGE, query_string={"limit": 2}, headers=admin_headers()).get_json()
    assert [d["id"] for d in first["documents"]] == ["doc-0", "doc-1"]
    seen = [d["id"] for d in first["documents"]]
    cursor = first["nextCursor"]
    while cursor:
        page = client.get(KNOWLEDGE, query_string={"limit": 2, "cursor": cursor}, headers=admin_headers()).get_json()
        seen += [d["id"] for d in page["documents"]]
        cursor = page["nextCursor"]
    assert seen == [f"doc-{i}" for i in range(5)]


@pytest.mark.parametrize(
    "document_id, body, field",
    [
        ("bad id!", {"title": "t", "content": "c"}, "id"),
        ("ok", {"content": "c"}, "title"),
        ("ok", {"title": "  ", "content": "c"}, "title"),
        ("ok", {"title": "t" * 201, "content": "c"}, "title"),
        ("ok", {"title": "t", "content": "c", "url": "javascript:alert(1)"}, "url"),
        ("ok", {"title": "t", "content": "c", "url": "http://0*"}, "url"),
        ("ok", {"title": "t", "content": 5}, "content"),
        ("ok", {"title": "t", "content": "x" * (2 * 1024 * 1024 + 1)}, "content"),
        ("ok", {"title": "t", "content": " \n\t "}, "content"),
        ("ok", {"title": "t", "content": "c", "format": "pdf"}, "format"),
        ("ok", [], "body"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field_and_changes_nothing(client, redis_client, document_id, body, field):
    response = client.put(f"{KNOWLEDGE}/{document_id}", json=body, headers=admin_headers())
    assert response.status_code == 400
    assert response.get_json()["error"] == "Invalid document" and field in response.get_json()["details"]
    assert not [key for key in redis_client.keys("*") if ":knowledge" in key]


def test_the_knowledge_routes_need_the_admin_key(client):
    routes = (("PUT", f"{KNOWLEDGE}/x"), ("GET", KNOWLEDGE), ("GET", f"{KNOWLEDGE}/x"), ("DELETE", f"{KNOWLEDGE}/x"))
    for method, path in routes:
        assert client.open(path, method=method, json={}, headers=chat_headers()).status_code == 401


# ---- answering -----------------------------------------------------------------------------


def test_without_documents_a_turn_is_what_it_was_no_passages_no_sources(client, upstream):
    response = client.post("/v1/chat", json={"sessionId": "s-1", "message": "refund?"}, headers=chat_headers())
    assert "sources" not in response.get_json()
    assert system_message(upstream) == services.of(client.application).settings.system_prompt


def test_a_turn_gives_the_model_the_passage_that_answers_it_and_names_its_source(client, upstream, store):
    put(client, "policies", REFUNDS, title="Store policies", url="https://shop.example/policies")
    put(client, "warranty", WARRANTY, title="Warranty")
    response = client.post(
        "/v1/chat", json={"sessionId": "s-1", "message": "Can I get a refund?"}, headers=chat_headers()
    )
    source = {"id": "policies", "title": "Store policies", "url": "https://shop.example/policies"}
    assert response.get_json()["sources"][0] == source
    system = system_message(upstream)
    assert "[1] Store policies\nStore policies > Refunds\nUnopened items" in system
    assert "cite" in system.lower() and "do not know" in system
    stored = store.conversations.history("s-1", 10)[-1]
    assert stored["role"] == "assistant" and stored["sources"][0] == source


def test_the_stream_sends_the_sources_before_done(client, upstream):
    put(client, "policies", REFUNDS, title="Store policies")
    with client.post(
        "/v1/chat/stream", json={"sessionId": "s-1", "message": "How long does shipping take?"}, headers=chat_headers()
    ) as response:
        events = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    types = [event["type"] for event in events]
    assert types[-2:] == ["sources", "done"]
    assert events[-2]["sources"] == [{"id": "policies", "title": "Store policies", "url": None}]


@pytest.mark.parametrize("question", ["What is the weather in Paris today?", "what is the meaning of life", "is"])
def test_a_question_the_documents_do_not_touch_gets_no_passages_and_no_sources(client, upstream, question):
    """Common words ("what", "is", "the") match every document: they are not search terms."""
    put(client, "policies", REFUNDS, title="Store policies")
    put(client, "gadget", GADGET, title="The Gadget Pro")
    response = client.post("/v1/chat", json={"sessionId": "s-1", "message": question}, headers=chat_headers())
    assert "sources" not in response.get_json() and "[1]" not in system_message(upstream)


def test_a_follow_up_question_still_finds_what_it_refers_to(client, upstream):
    put(client, "gadget", GADGET, title="The Gadget Pro")
    put(client, "warranty", WARRANTY, title="Warranty")
    chat_turn(client, "s-1", "Tell me about the Gadget Pro blender")
    chat_turn(client, "s-1", "and how much is it?")
    assert "149 euros" in system_message(upstream).split("[2]")[0]  # the first passage


def test_a_replaced_document_is_searched_in_its_new_version(client, upstream):
    put(client, "policies", REFUNDS, title="Store policies")
    chat_turn(client, "s-1", "refund")
    put(client, "policies", REFUNDS.replace("30 days", "14 days"), title="Store policies")
    chat_turn(client, "s-2", "refund")
    assert "14 days" in system_message(upstream) and "30 days" not in system_message(upstream)


def test_deleting_every_document_gives_turns_without_passages(client, upstream):
    put(client, "policies", REFUNDS, title="Store policies")
    chat_turn(client, "s-1", "refund")
    client.delete(f"{KNOWLEDGE}/policies", headers=admin_headers())
    response = client.post("/v1/chat", json={"sessionId": "s-2", "message": "refund"}, headers=chat_headers())
    assert "sources" not in response.get_json() and "[1]" not in system_message(upstream)


def test_retention_and_purge_leave_knowledge_alone(client, store, redis_client):
    put(client, "policies", REFUNDS, title="Store policies")
    chat_turn(client, "s-1", "refund")
    assert store.erasure.purge_idle(store.clock.now_ms() + 1) == 1
    assert client.get(f"{KNOWLEDGE}/policies", headers=admin_headers()).status_code == 200


# ---- embeddings ----------------------------------------------------------------------------

CONCEPTS = [("refund", "money", "reimburse", "return"), ("shipping", "delivery", "parcel", "arrive")]


def concept_vector(text: str) -> list[float]:
    """Embeddings that know synonyms: one coordinate per concept."""
    words = text.lower().replace("?", " ").replace(".", " ").split()
    return [float(sum(word.startswith(concept) for word in words for concept in group)) for group in CONCEPTS] + [0.1]


def test_with_an_embedding_model_a_paraphrase_finds_its_passage(make_app, upstream):
    upstream.embedding = concept_vector
    client = make_app(EMBEDDING_MODEL="text-embedding-3-small", KNOWLEDGE_TOP_K="1").test_client()
    put(client, "policies", REFUNDS, title="Store policies")
    assert upstream.embedding_requests[-1]["model"] == "text-embedding-3-small"
    assert len(upstream.embedding_requests[-1]["input"]) == 2  # one per chunk, at ingestion
    chat_turn(client, "s-1", "When will my parcel arrive?")  # no word of the shipping passage
    assert "Standard shipping" in system_message(upstream)
    lexical_only = make_app(KNOWLEDGE_TOP_K="1").test_client()
    chat_turn(lexical_only, "s-2", "When will my parcel arrive?")
    assert "Standard shipping" not in system_message(upstream)


def test_embeddings_that_fail_at_ingestion_store_nothing(make_app, upstream):
    client = make_app(EMBEDDING_MODEL="text-embedding-3-small").test_client()
    upstream.fault, upstream.status = "status", 500
    assert put(client, "policies", REFUNDS).status_code == 502
    upstream.fault = None
    assert client.get(f"{KNOWLEDGE}/policies", headers=admin_headers()).status_code == 404


# ---- the dashboard and the ops command line ------------------------------------------------


def test_the_dashboard_uploads_lists_and_deletes_documents(app):
    client = signed_in(app)
    upload = {
        "csrf": form_token(client),
        "document": (io.BytesIO(REFUNDS.encode()), "store policies.md"),
        "url": "https://shop.example/policies",
    }
    response = client.post("/admin/knowledge", data=upload, content_type="multipart/form-data")
    assert response.status_code == 303
    stored = services.of(app).store.knowledge.get("store-policies.md")
    assert stored is not None and stored["url"] == "https://shop.example/policies"
    listing = page_text(client.get(response.headers["Location"]))
    assert "Stored store-policies.md." in listing and "<code>store-policies.md</code>" in listing
    assert ">Store policies<" in listing  # the title is the first heading

    refused = {"csrf": form_token(client), "document": (io.BytesIO(b"%PDF"), "scan.pdf")}
    response = client.post("/admin/knowledge", data=refused, content_type="multipart/form-data")
    assert response.status_code == 400 and "must be a .md, .markdown, .txt, .html or .htm file" in page_text(response)
    latin1 = {"csrf": form_token(client), "document": (io.BytesIO("Café crème".encode("latin-1")), "menu.txt")}
    response = client.post("/admin/knowledge", data=latin1, content_type="multipart/form-data")
    assert response.status_code == 400 and "must be UTF-8 text" in page_text(response)

    delete = {"csrf": form_token(client)}
    assert client.post("/admin/knowledge/store-policies.md/delete", data=delete).status_code == 303
    assert services.of(app).store.knowledge.get("store-policies.md") is None


def test_the_dashboard_thread_links_a_replys_sources(app, upstream):
    client = signed_in(app)
    put(client, "policies", REFUNDS, title="Store policies", url="https://shop.example/policies")
    conversation_id = chat_turn(client, "s-1", "refund?")
    page = page_text(client.get(f"/admin/conversations/{conversation_id}"))
    link = '<a href="https://shop.example/policies" target="_blank" rel="noopener noreferrer">Store policies</a>'
    assert "Sources:" in page and link in page


def test_the_command_line_adds_files_and_folders_lists_and_deletes(runner, tmp_path, store):
    folder = tmp_path / "site"
    (folder / "help").mkdir(parents=True)
    (folder / "refunds.md").write_text(REFUNDS)
    (folder / "help" / "warranty.html").write_text("<title>Warranty</title><p>Two years on every kettle.</p>")
    (folder / "notes.txt").write_text("Opening hours: 9 to 5.\n\nClosed on Sundays.")
    (folder / "scan.pdf").write_bytes(b"%PDF")
    result = runner.invoke(args=["ocw", "knowledge", "add", str(folder), "--base-url", "https://shop.example/help/"])
    assert result.exit_code == 0, result.output
    assert {d["id"]: (d["title"], d["url"]) for d in store.knowledge.page(10)[0]} == {
        "help-warranty.html": ("Warranty", "https://shop.example/help/help/warranty.html"),
        "notes.txt": ("Opening hours: 9 to 5.", "https://shop.example/help/notes.txt"),
        "refunds.md": ("Store policies", "https://shop.example/help/refunds.md"),
    }
    listed = runner.invoke(args=["ocw", "knowledge", "list"])
    assert "refunds.md" in listed.output and "2 chunks" in listed.output and " 1 chunk " in listed.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(args=["ocw", "knowledge", "add", str(empty)])
    assert nothing.exit_code == 1 and "Nothing to add" in nothing.output
    deleted = runner.invoke(args=["ocw", "knowledge", "delete", "notes.txt", "--yes"])
    assert deleted.exit_code == 0 and store.knowledge.get("notes.txt") is None
    missing = runner.invoke(args=["ocw", "knowledge", "delete", "notes.txt", "--yes"])
    assert missing.exit_code == 1 and "Document not found" in missing.output


def test_check_counts_the_documents_and_tries_the_embedding_model(make_app, upstream):
    app = make_app(EMBEDDING_MODEL="text-embedding-3-small")
    put(app.test_client(), "policies", REFUNDS, title="Store policies")
    result = app.test_cli_runner().invoke(args=["ocw", "check"])
    assert result.exit_code == 0, result.output
    assert "answers; 1 knowledge document" in result.output
    assert "ok    embeddings: text-embedding-3-small answers (64 dimensions)" in result.output
    upstream.fault, upstream.status = "status", 500
    failed = app.test_cli_runner().invoke(args=["ocw", "check"])
    assert failed.exit_code == 1 and "FAIL  embeddings: text-embedding-3-small failed" in failed.output


def test_only_whitespace_means_what_openapi_json_means_by_it():
    """The document's `\\S` patterns are ECMAScript's: U+0085 is not whitespace there, U+FEFF is."""
    assert knowledge.document("x", {"title": "\x85", "content": "\x1c"}).title == "\x85"
    with pytest.raises(knowledge.InvalidDocument) as refused:
        knowledge.document("x", {"title": "\ufeff", "content": "\u3000"})
    assert set(refused.value.details) == {"title", "content"}
