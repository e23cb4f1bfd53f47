// Enclave through the official `openai` Node SDK (v6): chat completions, plain and streamed.
//
// Run: ENCLAVE_BASE_URL=http://127.0.0.1:<port>/v1 node --test tests/clients/node/
// (tests/api_clients.rs starts the server and sets the environment.) The model is random noise:
// the tests check shapes, usage and that the stream spells out exactly the greedy text.

import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.ENCLAVE_BASE_URL;
const apiKey = process.env.ENCLAVE_API_KEY ?? 'test-key-123';
const model = process.env.ENCLAVE_MODEL ?? 'enclave-test-model';

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });
const messages = [{ role: 'user', content: 'Tell me a story.' }];

before(async () => {
  assert.ok(baseURL, 'ENCLAVE_BASE_URL is not set (http://127.0.0.1:<port>/v1)');
  const root = baseURL.replace(/\/v1\/?$/, '');
  // Reachable, then ready (the model loads after the server starts listening).
  const deadline = Date.now() + 60_000;
  for (;;) {
    const res = await fetch(`${root}/ready`).catch((e) => {
      throw new Error(`the Enclave server at ${root} is not reachable: ${e}`);
    });
    if (res.status === 200) break;
    assert.ok(Date.now() < deadline, `GET ${root}/ready is still ${res.status} after 60 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
});

function assertUsage(usage, maxCompletion) {
  assert.ok(usage, 'usage is missing');
  assert.ok(usage.prompt_tokens > 0, `prompt_tokens ${usage.prompt_tokens}`);
  assert.ok(usage.completion_tokens >= 0 && usage.completion_tokens <= maxCompletion);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
}

test('chat completion, not streamed', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 8 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(typeof r.id, 'string');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason), r.choices[0].finish_reason);
  assertUsage(r.usage, 8);
});

test('streamed chat spells out the greedy text, then usage', async () => {
  const params = { model, messages, max_tokens: 16, temperature: 0 };
  const full = await client.chat.completions.create(params);

  const stream = await client.chat.completions.create({
    ...params,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);

  assert.ok(chunks.length > 0, 'no chunks');
  for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'one id across chunks');

  const withChoices = chunks.filter((c) => c.choices.length > 0);
  assert.equal(withChoices[0].choices[0].delta.role, 'assistant');
  const text = withChoices.map((c) => c.choices[0].delta.content ?? '').join('');
  assert.equal(text, full.choices[0].message.content);
  const reasons = withChoices.map((c) => c.choices[0].finish_reason).filter((r) => r);
  assert.deepEqual(reasons, [full.choices[0].finish_reason]);

  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assertUsage(last.usage, 16);
  assert.equal(last.usage.completion_tokens, full.usage.completion_tokens);
  assert.equal(last.usage.prompt_tokens, full.usage.prompt_tokens);
});

test('errors are the SDK classes', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 4 }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
  );
  const bad = new OpenAI({ baseURL, apiKey: 'not-the-key', maxRetries: 0 });
  await assert.rejects(
    bad.chat.completions.create({ model, messages, max_tokens: 4 }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
});
