"""How often retrieval finds the passage that answers a question: hit rate at k for lexical
(BM25), embeddings and hybrid ranking, on bench/knowledge_eval/ (a small shop's documents, and
questions worded differently from the passages, each with the document and a phrase of the
passage that answers it).

The embeddings come from a real model that runs offline: WordLlama's l2_supercat (256
dimensions), whose weights ship inside its Python package (a test tool: requirements-dev.in).

    python bench/knowledge_quality.py
"""

from __future__ import annotations

import json
from pathlib import Path

import harness  # noqa: F401  (puts the service's modules on the path)
import wordllama
from wordllama import WordLlama

import knowledge
from storage import StoredChunk

EVAL = Path(__file__).resolve().parent / "knowledge_eval"
KS = (1, 2, 4)


def main() -> None:
    documents = json.loads((EVAL / "documents.json").read_text())
    questions = json.loads((EVAL / "questions.json").read_text())
    # The package holds its weights and tokenizer; this asks it never to fetch anything.
    model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    texts = [(doc_id, text) for doc_id, content in documents.items() for text in knowledge.chunk(content, "markdown")]
    vectors = model.embed([text for _, text in texts])
    chunks = [
        StoredChunk(doc_id, doc_id, None, text, knowledge.pack_vector(vector.tolist()))
        for (doc_id, text), vector in zip(texts, vectors, strict=True)
    ]
    index = knowledge.SearchIndex(chunks)
    hits = {mode: dict.fromkeys(KS, 0) for mode in ("lexical", "embeddings", "hybrid")}
    for item in questions:
        query_vector = model.embed([item["question"]])[0].tolist()
        found = {
            "lexical": index.lexical_ranking(item["question"]),
            "embeddings": index.semantic_ranking(query_vector),
            "hybrid": [chunks.index(c) for c in _hybrid(index, chunks, item["question"], query_vector)],
        }
        for mode, ranking in found.items():
            for k in KS:
                top = [chunks[n] for n in ranking[:k]]
                hits[mode][k] += any(c.document_id == item["document"] and item["answer"] in c.text for c in top)
    print(
        json.dumps(
            {
                "benchmark": "knowledge_quality",
                "documents": len(documents),
                "chunks": len(chunks),
                "questions": len(questions),
                "embedding_model": "WordLlama l2_supercat, 256 dimensions",
                "hit_rate_at_k": {mode: _rates(by_k, len(questions)) for mode, by_k in hits.items()},
            },
            indent=2,
        )
    )


def _rates(hits_at_k: dict[int, int], questions: int) -> dict[str, float]:
    return {f"@{k}": round(n / questions, 3) for k, n in hits_at_k.items()}


def _hybrid(index: knowledge.SearchIndex, chunks: list[StoredChunk], question: str, vector: list[float]):
    """The service's own fused ranking, as chunks (search returns passages: match them back)."""
    by_text = {chunk.text: chunk for chunk in chunks}
    return [by_text[passage.text] for passage in index.search(question, max(KS), vector)]


if __name__ == "__main__":
    main()
