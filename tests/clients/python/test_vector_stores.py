"""Enclave's embeddings, files and vector stores through the official `openai` Python SDK.

Needs the server to serve a real sentence-embedding model (all-MiniLM-L6-v2, 384 dimensions)
besides the chat test model, under the id ENCLAVE_EMBEDDING_MODEL (see conftest.py).

Unlike the chat model, the embedding model is real, so searches are asserted on what they find:
a paraphrased question must find the section that answers it.
"""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest

from conftest import EMBEDDING_MODEL, MODEL

DIMENSION = 384

HANDBOOK = """# Acme support handbook

## Resetting a password

To reset a forgotten password, open the sign-in page and choose "Forgot password". We email a
reset link that stays valid for thirty minutes. If the email does not arrive, check the spam
folder and make sure the address matches the one on the account.

## Refunds for annual plans

Annual subscriptions can be refunded within fourteen days of purchase. Send the invoice number
to the billing team; the money goes back to the original card within five business days.
"""

BILLING = """# Invoices

## Changing the billing address

The billing address printed on invoices can be changed under Settings, then Billing. New
invoices use the new address; invoices already issued are never reissued.
"""


# ---------------------------------------------------------------------------------------------
# helpers


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def embed(client: openai.OpenAI, text: str) -> list[float]:
    r = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="float")
    return r.data[0].embedding


def upload(client: openai.OpenAI, path, text: str | bytes):
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(data)
    with path.open("rb") as f:
        return client.files.create(file=f, purpose="assistants")


@pytest.fixture
def handbook(client, tmp_path):
    f = upload(client, tmp_path / "handbook.md", HANDBOOK)
    yield f
    try:
        client.files.delete(f.id)
    except openai.NotFoundError:
        pass


@pytest.fixture
def store(client, handbook):
    vs = client.vector_stores.create(
        name="sdk-test", file_ids=[handbook.id], metadata={"suite": "python"}
    )
    yield vs
    try:
        client.vector_stores.delete(vs.id)
    except openai.NotFoundError:
        pass


def search(client, store_id: str, query: str, **kw):
    return client.vector_stores.search(store_id, query=query, **kw).data


# ---------------------------------------------------------------------------------------------
# embeddings


def test_embedding_of_a_string_is_a_unit_vector(client):
    r = client.embeddings.create(
        model=EMBEDDING_MODEL, input="How do I reset my password?", encoding_format="float"
    )
    assert r.object == "list"
    assert r.model == EMBEDDING_MODEL
    assert len(r.data) == 1
    assert r.data[0].index == 0
    v = r.data[0].embedding
    assert len(v) == DIMENSION
    assert abs(norm(v) - 1.0) < 1e-3, norm(v)
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens


def test_embeddings_of_a_list_keep_their_order(client):
    texts = ["refund policy", "password reset", "billing address"]
    r = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert [d.index for d in r.data] == [0, 1, 2]
    for text, d in zip(texts, r.data):
        assert len(d.embedding) == DIMENSION
        alone = embed(client, text)
        assert max(abs(a - b) for a, b in zip(alone, d.embedding)) < 1e-4, text


def test_embeddings_of_token_arrays(client):
    # Ids in the BERT uncased vocabulary all-MiniLM-L6-v2 uses ("hello world", "how do").
    one = client.embeddings.create(
        model=EMBEDDING_MODEL, input=[7592, 2088], encoding_format="float"
    )
    assert len(one.data) == 1 and len(one.data[0].embedding) == DIMENSION
    assert abs(norm(one.data[0].embedding) - 1.0) < 1e-3
    assert one.usage.prompt_tokens > 0
    many = client.embeddings.create(
        model=EMBEDDING_MODEL, input=[[7592, 2088], [2129, 2079]], encoding_format="float"
    )
    assert [d.index for d in many.data] == [0, 1]
    for d in many.data:
        assert len(d.embedding) == DIMENSION
        assert abs(norm(d.embedding) - 1.0) < 1e-3
    assert many.usage.prompt_tokens > 0


def test_base64_embeddings_decode_to_the_float_ones(client):
    text = "Where can I change the billing address?"
    floats = embed(client, text)
    r = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="base64")
    encoded = r.data[0].embedding
    assert isinstance(encoded, str), type(encoded)
    raw = base64.b64decode(encoded)
    assert len(raw) == 4 * DIMENSION
    decoded = struct.unpack(f"<{DIMENSION}f", raw)
    assert max(abs(a - b) for a, b in zip(decoded, floats)) < 1e-6


def test_embeddings_refuse_a_chat_model_and_an_unknown_one(client):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="hello")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-embedding-model", input="hello")


# ---------------------------------------------------------------------------------------------
# files


def test_file_round_trip(client, tmp_path):
    f = upload(client, tmp_path / "handbook.md", HANDBOOK)
    assert f.object == "file"
    assert f.id.startswith("file-")
    assert f.filename == "handbook.md"
    assert f.purpose == "assistants"
    assert f.bytes == len(HANDBOOK.encode("utf-8"))
    assert client.files.retrieve(f.id).filename == "handbook.md"
    assert f.id in [x.id for x in client.files.list()]
    assert f.id in [x.id for x in client.files.list(purpose="assistants")]
    assert client.files.content(f.id).content == HANDBOOK.encode("utf-8")
    deleted = client.files.delete(f.id)
    assert deleted.deleted is True and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_an_empty_file_is_refused(client, tmp_path):
    with pytest.raises(openai.BadRequestError):
        upload(client, tmp_path / "empty.md", b"")


# ---------------------------------------------------------------------------------------------
# vector stores


def test_created_store_has_its_file_ingested(client, store, handbook):
    assert store.object == "vector_store"
    assert store.name == "sdk-test"
    assert store.status == "completed"
    assert store.metadata == {"suite": "python"}
    assert store.file_counts.completed == 1 and store.file_counts.total == 1
    assert store.usage_bytes > 0
    files = client.vector_stores.files.list(vector_store_id=store.id).data
    assert [f.id for f in files] == [handbook.id]
    assert files[0].status == "completed"
    assert files[0].last_error is None
    assert files[0].vector_store_id == store.id
    assert store.id in [s.id for s in client.vector_stores.list()]


def test_search_finds_the_section_a_paraphrase_asks_about(client, store, handbook):
    hits = search(client, store.id, "I can't remember my password, how do I get back in?")
    assert hits, "no results"
    top = hits[0]
    assert top.file_id == handbook.id
    assert top.filename == "handbook.md"
    assert 0.0 <= top.score <= 1.0
    assert "reset link" in top.content[0].text, top.content[0].text
    assert top.content[0].type == "text"

    hits = search(client, store.id, "Can I get my money back for a yearly subscription?")
    assert "refunded" in hits[0].content[0].text, hits[0].content[0].text
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_search_takes_a_list_of_queries_and_a_result_limit(client, store):
    hits = search(client, store.id, ["forgot", "password"], max_num_results=1)
    assert len(hits) == 1
    assert "password" in hits[0].content[0].text


def test_upload_and_poll_with_attributes_then_filter_by_them(client, store, tmp_path):
    path = tmp_path / "invoices.md"
    path.write_text(BILLING, encoding="utf-8")
    with path.open("rb") as f:
        billing = client.vector_stores.files.upload_and_poll(
            vector_store_id=store.id, file=f, attributes={"team": "billing"}
        )
    try:
        assert billing.status == "completed", billing.last_error
        assert billing.attributes == {"team": "billing"}
        assert billing.usage_bytes > 0
        hits = search(
            client,
            store.id,
            "how do I reset my password",
            filters={"type": "eq", "key": "team", "value": "billing"},
        )
        assert hits, "the filter matched nothing"
        assert {h.file_id for h in hits} == {billing.id}
        assert all(h.attributes == {"team": "billing"} for h in hits)
        with pytest.raises(openai.BadRequestError):
            search(client, store.id, "x", filters={"type": "gt", "key": "n", "value": 1})
    finally:
        client.files.delete(billing.id)


def test_update_renames_the_store(client, store):
    updated = client.vector_stores.update(store.id, name="renamed", metadata={"k": "v"})
    assert updated.id == store.id
    assert updated.name == "renamed"
    again = client.vector_stores.retrieve(store.id)
    assert again.name == "renamed"
    assert again.metadata == {"k": "v"}


def test_removing_a_file_from_a_store_removes_it_from_search(client, store, tmp_path):
    billing = upload(client, tmp_path / "invoices.md", BILLING)
    try:
        attached = client.vector_stores.files.create_and_poll(billing.id, vector_store_id=store.id)
        assert attached.status == "completed"
        hits = search(client, store.id, "change the billing address on invoices")
        assert hits[0].file_id == billing.id
        deleted = client.vector_stores.files.delete(billing.id, vector_store_id=store.id)
        assert deleted.deleted is True
        hits = search(client, store.id, "change the billing address on invoices")
        assert billing.id not in {h.file_id for h in hits}
        listed = [f.id for f in client.vector_stores.files.list(vector_store_id=store.id)]
        assert billing.id not in listed
        # The uploaded file itself stays.
        assert client.files.retrieve(billing.id).id == billing.id
        with pytest.raises(openai.NotFoundError):
            client.vector_stores.files.retrieve(billing.id, vector_store_id=store.id)
    finally:
        client.files.delete(billing.id)


def test_a_file_that_cannot_be_parsed_fails_alone(client, store, handbook, tmp_path):
    broken = upload(client, tmp_path / "broken.txt", b"caf\xc3 \xff\xfe not utf-8")
    try:
        vs_file = client.vector_stores.files.create_and_poll(broken.id, vector_store_id=store.id)
        assert vs_file.status == "failed"
        assert vs_file.last_error is not None
        assert vs_file.last_error.code == "invalid_file"
        assert vs_file.last_error.message
        failed = client.vector_stores.files.list(vector_store_id=store.id, filter="failed").data
        assert [f.id for f in failed] == [broken.id]
        good = client.vector_stores.files.retrieve(handbook.id, vector_store_id=store.id)
        assert good.status == "completed"
        counts = client.vector_stores.retrieve(store.id).file_counts
        assert (counts.completed, counts.failed, counts.total) == (1, 1, 2)
        hits = search(client, store.id, "how long is the password reset link valid?")
        assert hits and hits[0].file_id == handbook.id
    finally:
        client.files.delete(broken.id)


def test_file_batch_upload_and_poll(client, store):
    files = [
        ("invoices.md", BILLING.encode("utf-8")),
        ("notes.txt", b"Support hours are nine to five, Monday to Friday."),
    ]
    # One upload at a time: the test server admits two requests in flight per key.
    batch = client.vector_stores.file_batches.upload_and_poll(
        store.id, files=files, max_concurrency=1
    )
    assert batch.object == "vector_store.files_batch"
    assert batch.id.startswith("vsfb_")
    assert batch.status == "completed"
    assert batch.vector_store_id == store.id
    assert (batch.file_counts.completed, batch.file_counts.total) == (2, 2)
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    ids = [f.id for f in listed.data]
    assert len(ids) == 2
    for file_id in ids:
        client.files.delete(file_id)


def test_deleted_store_is_not_found(client, handbook):
    vs = client.vector_stores.create(name="short-lived", file_ids=[handbook.id])
    deleted = client.vector_stores.delete(vs.id)
    assert deleted.deleted is True and deleted.id == vs.id
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(vs.id)
    # Its file is kept.
    assert client.files.retrieve(handbook.id).id == handbook.id


def test_store_errors_are_openai_errors(client, store):
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.create(file_ids=["file-does-not-exist"])
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.create(
            chunking_strategy={"type": "bogus"}  # type: ignore[arg-type]
        )
    with pytest.raises(openai.BadRequestError):
        search(client, store.id, "password", rewrite_query=True)
    with pytest.raises(openai.BadRequestError):
        search(client, store.id, "password", max_num_results=51)
    with pytest.raises(openai.NotFoundError):
        search(client, "vs_does_not_exist", "password")
