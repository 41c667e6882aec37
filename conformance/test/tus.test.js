// Resumable uploads (TUS 1.0.0, /storage/v1/upload/resumable) with the official tus-js-client,
// configured exactly as Supabase documents it, into the user's folder of lora-datasets; the
// result is read back with supabase-js. Spec: ../shared/docs/supabase-protocol.md §4.8, §5.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SUPABASE_URL, newUser, ok } from '../lib/helpers.js';
import {
  CHUNK,
  DATASETS,
  MemoryUrlStorage,
  TUS_ENDPOINT,
  TUS_SIGNED_ENDPOINT,
  downloadedBytes,
  jsonlBytes,
  ownFolder,
  runToCompletion,
  sha256,
  startAndAbortAfter,
  storageFails,
  supabaseTusOptions,
  tus,
} from '../lib/storage.js';

const JSONL = 'application/jsonl';
const MB = 1024 * 1024;

function requests(log, method) {
  return log.filter((e) => e.kind === 'request' && e.method === method);
}
function responses(log, method) {
  return log.filter((e) => e.kind === 'response' && e.method === method);
}
function show(log) {
  return JSON.stringify(log.map(({ kind, method, status, offset, body }) => ({ kind, method, status, offset, body })));
}

async function assertStoredObject(client, path, source, what) {
  const got = await downloadedBytes(await client.storage.from(DATASETS).download(path), `${what}: download`);
  assert.equal(got.length, source.length, `${what}: size`);
  assert.equal(sha256(got), sha256(source), `${what}: SHA-256 of the stored object equals the source`);
  const folder = path.slice(0, path.lastIndexOf('/'));
  const name = path.slice(path.lastIndexOf('/') + 1);
  const listed = ok(await client.storage.from(DATASETS).list(folder), `${what}: list`).find((r) => r.name === name);
  assert.ok(listed, `${what}: the object is listed`);
  assert.equal(listed.metadata?.size, source.length, `${what}: metadata.size`);
  assert.equal(listed.metadata?.mimetype, JSONL, `${what}: metadata.mimetype from the contentType metadata`);
  assert.equal(listed.metadata?.cacheControl, 'max-age=3600', `${what}: cacheControl "3600" is stored as max-age=3600`);
}

test('tus: 50 MB in 6 MiB chunks, aborted half-way, resumed by a new Upload, byte-identical', async () => {
  const a = await newUser('tus-resume');
  const path = `${ownFolder(a, 'tus')}/big.jsonl`;
  const source = jsonlBytes(50 * MB, 50);
  const urlStorage = new MemoryUrlStorage();
  const opts = (log) =>
    supabaseTusOptions({
      headers: { authorization: `Bearer ${a.session.access_token}`, 'x-upsert': 'true' },
      bucketName: DATASETS,
      objectName: path,
      contentType: JSONL,
      urlStorage,
      log,
    });

  // 1. First attempt, aborted once more than half of the bytes are sent.
  const log1 = [];
  const first = new tus.Upload(source, opts(log1));
  const { sentAtAbort, acceptedAtAbort } = await startAndAbortAfter(first, 0.5);
  assert.ok(sentAtAbort > source.length / 2, 'aborted after half of the bytes were sent');

  const [post] = requests(log1, 'POST');
  assert.ok(post, `the upload was created with POST; log ${show(log1)}`);
  assert.equal(post.url, TUS_ENDPOINT);
  const [created] = responses(log1, 'POST');
  assert.equal(created.status, 201, `POST answered 201; log ${show(log1)}`);
  assert.equal(created.offset, String(CHUNK), 'uploadDataDuringCreation: the POST carried the first 6 MiB chunk (Upload-Offset)');
  assert.ok(
    created.location?.startsWith(`${SUPABASE_URL}/storage/v1/upload/resumable/`),
    `Location is absolute under /storage/v1/upload/resumable/: ${created.location}`,
  );
  assert.equal(first.url, created.location);
  for (const r of responses(log1, 'PATCH')) {
    assert.equal(r.status, 204, `every completed PATCH answered 204; log ${show(log1)}`);
  }
  assert.ok(acceptedAtAbort >= CHUNK, 'the server had confirmed at least the first chunk before the abort');

  // Not finished: no object yet.
  storageFails(await a.client.storage.from(DATASETS).download(path), { statusCode: '404' }, 'download of an unfinished upload');

  // 2. A new Upload object (as after an app restart) finds the stored upload URL and resumes it.
  const log2 = [];
  const second = new tus.Upload(source, opts(log2));
  const previous = await second.findPreviousUploads();
  assert.equal(previous.length, 1, 'exactly one previous upload for this file and endpoint');
  assert.equal(previous[0].uploadUrl, first.url, 'the stored upload URL is the one the server created');
  let firstProgress;
  second.options.onProgress = (sent) => {
    if (firstProgress === undefined) firstProgress = sent;
  };
  await runToCompletion(second, { resumeFrom: previous[0] });

  assert.equal(requests(log2, 'POST').length, 0, `the resumed upload did not create a new upload; log ${show(log2)}`);
  const [head] = responses(log2, 'HEAD');
  assert.equal(head?.status, 200, `the resumed upload started with HEAD → 200; log ${show(log2)}`);
  const resumedAt = Number(head.offset);
  assert.ok(resumedAt >= acceptedAtAbort, `HEAD Upload-Offset ${resumedAt} ≥ bytes confirmed before the abort ${acceptedAtAbort}`);
  assert.ok(resumedAt <= sentAtAbort, `HEAD Upload-Offset ${resumedAt} ≤ bytes sent before the abort ${sentAtAbort}`);
  const patches = requests(log2, 'PATCH');
  assert.ok(patches.length >= 1, 'the rest was sent with PATCH');
  assert.ok(Number(patches[0].offset) > 0, `the first PATCH of the resumed upload starts at ${patches[0].offset}, not 0`);
  assert.ok(firstProgress > 0, `the resumed upload's first onProgress value is ${firstProgress}, not 0`);
  assert.equal(second.url, first.url, 'the same upload URL was resumed');
  const sentAfterResume = patches.length * CHUNK;
  assert.ok(sentAfterResume < source.length, 'the resumed upload did not resend the whole file');
  assert.deepEqual(await urlStorage.findAllUploads(), [], 'removeFingerprintOnSuccess: the stored URL is gone');

  await assertStoredObject(a.client, path, source, 'resumed 50 MB upload');
});

test('tus: signed endpoint (/upload/resumable/sign with x-signature), 13 MB, byte-identical', async () => {
  const a = await newUser('tus-signed');
  const path = `${ownFolder(a, 'tus-signed')}/signed.jsonl`;
  const source = jsonlBytes(13 * MB, 13);
  const { token } = ok(await a.client.storage.from(DATASETS).createSignedUploadUrl(path), 'createSignedUploadUrl');

  const log = [];
  const upload = new tus.Upload(
    source,
    supabaseTusOptions({
      endpoint: TUS_SIGNED_ENDPOINT,
      headers: { 'x-signature': token },
      bucketName: DATASETS,
      objectName: path,
      contentType: JSONL,
      urlStorage: new MemoryUrlStorage(),
      log,
    }),
  );
  await runToCompletion(upload);

  const [created] = responses(log, 'POST');
  assert.equal(created?.status, 201, `POST answered 201; log ${show(log)}`);
  assert.ok(
    created.location?.startsWith(`${SUPABASE_URL}/storage/v1/upload/resumable/sign/`),
    `the signed variant's Location is under /upload/resumable/sign/: ${created.location}`,
  );
  const patches = responses(log, 'PATCH');
  assert.equal(patches.length, 2, `13 MB = POST with 6 MiB + 2 PATCHes; log ${show(log)}`);
  assert.deepEqual(patches.map((p) => [p.status, p.offset]), [[204, String(2 * CHUNK)], [204, String(source.length)]]);

  await assertStoredObject(a.client, path, source, 'signed TUS upload');
});

describe('tus: refusals carry the real status and the plain-text message (§4.8)', () => {
  let a;
  let b;
  // Bigger than one chunk, as a real dataset: the refused POST carries a full 6 MiB first chunk
  // (uploadDataDuringCreation), which the server must let the client finish sending or drain.
  const source = jsonlBytes(CHUNK + MB, 7);

  before(async () => {
    a = await newUser('tus-refuse-a');
    b = await newUser('tus-refuse-b');
  });

  /**
   * Runs an upload that must be refused, three times (a refusal that tears the connection down
   * while the client still sends the chunk is a race, lost only some of the time); every attempt
   * must see the same refusing response. Returns its status and body.
   */
  async function refused({ endpoint = TUS_ENDPOINT, headers, objectName, contentType = JSONL }) {
    const seen = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const log = [];
      const options = supabaseTusOptions({ endpoint, headers, bucketName: DATASETS, objectName, contentType, urlStorage: new MemoryUrlStorage(), log });
      // No retries: tus-js-client would retry a 409 (and transport errors) with the documented delays.
      options.retryDelays = null;
      const err = await runToCompletion(new tus.Upload(source, options)).then(
        () => assert.fail(`upload of ${objectName} succeeded; log ${show(log)}`),
        (e) => e,
      );
      assert.ok(err.originalResponse, `attempt ${attempt}: tus-js-client got the refusing response, not a transport error: ${err.message}`);
      seen.push({ status: err.originalResponse.getStatus(), body: err.originalResponse.getBody() });
    }
    assert.deepEqual(seen[1], seen[0]);
    assert.deepEqual(seen[2], seen[0]);
    return seen[0];
  }
  const bearer = (u) => ({ authorization: `Bearer ${u.session.access_token}` });

  async function assertNoObject(path) {
    storageFails(await a.client.storage.from(DATASETS).download(path), { statusCode: '404' }, `download ${path}`);
  }

  test("another user's folder: 403 new row violates row-level security policy", async () => {
    const path = `${a.user.id}/planted-${Date.now()}.jsonl`;
    const r = await refused({ headers: bearer(b), objectName: path });
    assert.equal(r.status, 403);
    assert.match(r.body, /new row violates row-level security policy/);
    await assertNoObject(path);
  });

  test('a MIME type the bucket does not allow: 415 mime type image/png is not supported', async () => {
    const path = `${a.user.id}/tus-${Date.now()}.png`;
    const r = await refused({ headers: bearer(a), objectName: path, contentType: 'image/png' });
    assert.equal(r.status, 415);
    assert.match(r.body, /mime type image\/png is not supported/);
    await assertNoObject(path);
  });

  test('an existing object without x-upsert: 409 The resource already exists', async () => {
    const path = `${ownFolder(a, 'tus-dup')}/exists.jsonl`;
    const seed = jsonlBytes(10, 1);
    ok(await a.client.storage.from(DATASETS).upload(path, seed, { contentType: JSONL }), 'seed object');
    const r = await refused({ headers: bearer(a), objectName: path });
    assert.equal(r.status, 409);
    assert.match(r.body, /already exists/);
    const got = await downloadedBytes(await a.client.storage.from(DATASETS).download(path), 'download of the seed');
    assert.ok(got.equals(seed), 'the existing object is untouched');
  });

  test('signed endpoint, objectName other than the token url: 400 Invalid signature', async () => {
    const signedFor = `${a.user.id}/signed-for-${Date.now()}.jsonl`;
    const path = `${a.user.id}/but-not-this-${Date.now()}.jsonl`;
    const { token } = ok(await a.client.storage.from(DATASETS).createSignedUploadUrl(signedFor), 'createSignedUploadUrl');
    const r = await refused({ endpoint: TUS_SIGNED_ENDPOINT, headers: { 'x-signature': token }, objectName: path });
    assert.equal(r.status, 400);
    assert.match(r.body, /Invalid signature/);
    await assertNoObject(path);
  });
});
