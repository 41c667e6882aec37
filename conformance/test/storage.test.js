// Storage (/storage/v1) through the official supabase-js client (storage-js), as signed-in users,
// against the real buckets of migrations/*_lora_storage.sql: lora-datasets (private, own-folder
// policies, text MIME types only) and lora-models (private, users read their own folder only).
// Spec: ../shared/docs/supabase-protocol.md §4.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SUPABASE_SERVICE_ROLE_KEY, jwtPayload, newClient, newUser, ok } from '../lib/helpers.js';
import { DATASETS, MODELS, downloadedBytes, jsonlBytes, ownFolder, storageFails } from '../lib/storage.js';

const JSONL = 'application/jsonl';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('storage: a user in their own folder of lora-datasets', () => {
  let a;
  let bucket;
  let folder;

  before(async () => {
    a = await newUser('storage-own');
    bucket = a.client.storage.from(DATASETS);
    folder = ownFolder(a, 'ds');
  });

  test('upload(Buffer, application/jsonl) returns id, path and fullPath; download() returns the exact bytes', async () => {
    const path = `${folder}/train.jsonl`;
    const bytes = jsonlBytes(10_000, 1);
    const res = await bucket.upload(path, bytes, { contentType: JSONL });
    const data = ok(res, 'upload');
    assert.equal(data.path, path);
    assert.equal(data.fullPath, `${DATASETS}/${path}`);
    assert.match(data.id, UUID, 'data.id is the object uuid (from the "Id" field)');

    const blob = await bucket.download(path);
    const got = await downloadedBytes(blob, 'download');
    assert.equal(got.length, bytes.length);
    assert.ok(got.equals(bytes), 'downloaded bytes equal the uploaded bytes');
    assert.equal(blob.data.type, JSONL, 'Content-Type of the download is the stored mimetype');
  });

  test('uploading to an existing path without upsert fails with 409 Duplicate and keeps the bytes', async () => {
    const path = `${folder}/dup.jsonl`;
    const first = jsonlBytes(2_000, 2);
    ok(await bucket.upload(path, first, { contentType: JSONL }), 'first upload');
    const again = await bucket.upload(path, jsonlBytes(3_000, 3), { contentType: JSONL });
    storageFails(again, { statusCode: '409', code: 'KeyAlreadyExists', message: /already exists/ }, 'second upload');
    const got = await downloadedBytes(await bucket.download(path), 'download after 409');
    assert.ok(got.equals(first), 'the failed upload did not touch the stored bytes');
  });

  test('upload with upsert: true replaces the bytes (same path, same id)', async () => {
    const path = `${folder}/upsert.jsonl`;
    const created = ok(await bucket.upload(path, jsonlBytes(4_000, 4), { contentType: JSONL }), 'first upload');
    const replacement = jsonlBytes(1_234, 5);
    const replaced = ok(
      await bucket.upload(path, replacement, { contentType: 'text/plain', upsert: true }),
      'upsert upload',
    );
    assert.equal(replaced.path, path);
    assert.equal(replaced.fullPath, `${DATASETS}/${path}`);
    assert.equal(replaced.id, created.id, 'an upsert updates the row: the object id stays');
    const res = await bucket.download(path);
    const got = await downloadedBytes(res, 'download after upsert');
    assert.equal(got.length, replacement.length);
    assert.ok(got.equals(replacement), 'download returns the replacement bytes');
    assert.equal(res.data.type, 'text/plain', 'the mimetype is replaced too');
  });

  test('upload(Blob) goes multipart/form-data and stores the bytes with the Blob type', async () => {
    const path = `${folder}/blob.jsonl`;
    const bytes = jsonlBytes(7_777, 6);
    const blob = new Blob([bytes], { type: 'application/x-ndjson' });
    const data = ok(await bucket.upload(path, blob), 'upload(Blob)');
    assert.equal(data.path, path);
    assert.equal(data.fullPath, `${DATASETS}/${path}`);
    assert.match(data.id, UUID);
    const res = await bucket.download(path);
    const got = await downloadedBytes(res, 'download of the Blob upload');
    assert.ok(got.equals(bytes), 'downloaded bytes equal the Blob bytes (no multipart framing leaked in)');
    assert.equal(res.data.type, 'application/x-ndjson', 'the file part Content-Type is the stored mimetype');
  });

  test('createSignedUploadUrl + uploadToSignedUrl stores the object in the user folder', async () => {
    const path = `${folder}/signed-upload.jsonl`;
    const signed = ok(await bucket.createSignedUploadUrl(path), 'createSignedUploadUrl');
    assert.equal(signed.path, path);
    assert.ok(signed.token, 'a token is returned');
    const url = new URL(signed.signedUrl);
    assert.equal(url.pathname, `/storage/v1/object/upload/sign/${DATASETS}/${path}`);
    assert.equal(url.searchParams.get('token'), signed.token);
    const claims = jwtPayload(signed.token);
    assert.equal(claims.url, `${DATASETS}/${path}`, 'token url claim is "<bucket>/<path>"');
    assert.equal(claims.scope, 'upload');
    assert.equal(claims.owner, a.user.id);
    assert.equal(claims.upsert, false);

    const bytes = jsonlBytes(5_555, 7);
    // A client without any session: the token alone authorizes the upload.
    const anon = newClient().storage.from(DATASETS);
    const up = ok(await anon.uploadToSignedUrl(path, signed.token, bytes, { contentType: JSONL }), 'uploadToSignedUrl');
    assert.equal(up.path, path);
    assert.equal(up.fullPath, `${DATASETS}/${path}`);

    const got = await downloadedBytes(await bucket.download(path), 'owner downloads the signed upload');
    assert.ok(got.equals(bytes));
    // The token says upsert: false, so a second use on the now-existing path is a duplicate.
    const twice = await anon.uploadToSignedUrl(path, signed.token, jsonlBytes(10, 8), { contentType: JSONL });
    storageFails(twice, { statusCode: '409', code: 'KeyAlreadyExists' }, 'second uploadToSignedUrl');
  });

  test('createSignedUrl + fetch with Range returns 206, the exact bytes and Content-Range', async () => {
    const path = `${folder}/ranged.jsonl`;
    const bytes = jsonlBytes(50_000, 9);
    ok(await bucket.upload(path, bytes, { contentType: JSONL }), 'upload');
    const { signedUrl } = ok(await bucket.createSignedUrl(path, 60), 'createSignedUrl');
    const url = new URL(signedUrl);
    assert.equal(url.pathname, `/storage/v1/object/sign/${DATASETS}/${path}`);
    assert.ok(url.searchParams.get('token'), 'signed URL carries ?token=');

    // No credentials: the token is the authorization.
    const ranged = await fetch(signedUrl, { headers: { Range: 'bytes=1000-1999' } });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers.get('content-range'), `bytes 1000-1999/${bytes.length}`);
    assert.equal(ranged.headers.get('content-length'), '1000');
    assert.equal(ranged.headers.get('accept-ranges'), 'bytes');
    const part = Buffer.from(await ranged.arrayBuffer());
    assert.ok(part.equals(bytes.subarray(1000, 2000)), 'the 206 body is exactly bytes 1000..1999');

    const suffix = await fetch(signedUrl, { headers: { Range: 'bytes=-10' } });
    assert.equal(suffix.status, 206);
    assert.equal(suffix.headers.get('content-range'), `bytes ${bytes.length - 10}-${bytes.length - 1}/${bytes.length}`);
    assert.ok(Buffer.from(await suffix.arrayBuffer()).equals(bytes.subarray(bytes.length - 10)));

    const whole = await fetch(signedUrl);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get('content-type'), JSONL);
    assert.ok(Buffer.from(await whole.arrayBuffer()).equals(bytes), 'a GET without Range returns the whole object');

    const beyond = await fetch(signedUrl, { headers: { Range: `bytes=${bytes.length}-` } });
    assert.equal(beyond.status, 416, 'a range starting at the size is unsatisfiable (§4.6)');
    assert.equal((await beyond.json()).statusCode, '416');
  });

  test('list(folder) returns one level: files with id and metadata, sub-folders with null id', async () => {
    const dir = `${folder}/listing`;
    const sizes = { 'b.jsonl': 300, 'a.jsonl': 200 };
    for (const [name, size] of Object.entries(sizes)) {
      ok(await bucket.upload(`${dir}/${name}`, jsonlBytes(size, size), { contentType: JSONL }), `upload ${name}`);
    }
    ok(await bucket.upload(`${dir}/sub/deep.jsonl`, jsonlBytes(100, 10), { contentType: JSONL }), 'upload sub/deep.jsonl');

    const rows = ok(await bucket.list(dir), 'list');
    assert.deepEqual(rows.map((r) => r.name), ['a.jsonl', 'b.jsonl', 'sub'], 'names relative to the prefix, sorted by name');
    for (const name of ['a.jsonl', 'b.jsonl']) {
      const r = rows.find((x) => x.name === name);
      assert.match(r.id, UUID, `${name} has an id`);
      assert.equal(r.metadata?.size, sizes[name], `${name} metadata.size`);
      assert.equal(r.metadata?.mimetype, JSONL, `${name} metadata.mimetype`);
      assert.ok(!Number.isNaN(Date.parse(r.created_at)), `${name} created_at is a timestamp`);
      assert.ok(!Number.isNaN(Date.parse(r.updated_at)), `${name} updated_at is a timestamp`);
    }
    const sub = rows.find((x) => x.name === 'sub');
    assert.equal(sub.id, null, 'a folder entry has id null');
    assert.equal(sub.metadata, null, 'a folder entry has metadata null');

    const inner = ok(await bucket.list(`${dir}/sub`), 'list sub');
    assert.deepEqual(inner.map((r) => r.name), ['deep.jsonl']);

    const searched = ok(await bucket.list(dir, { search: 'b.json' }), 'list with search');
    assert.deepEqual(searched.map((r) => r.name), ['b.jsonl']);

    assert.deepEqual(ok(await bucket.list(`${folder}/no-such-folder`), 'list empty'), []);
  });

  test('remove([...]) returns the removed rows; afterwards download fails with 404', async () => {
    const dir = `${folder}/removal`;
    const paths = [`${dir}/one.jsonl`, `${dir}/two.jsonl`];
    for (const p of paths) ok(await bucket.upload(p, jsonlBytes(500, 11), { contentType: JSONL }), `upload ${p}`);

    const removed = ok(await bucket.remove([...paths, `${dir}/never-existed.jsonl`]), 'remove');
    assert.deepEqual(removed.map((r) => r.name).sort(), paths, 'the removed rows, by full object name; missing names are absent');
    for (const r of removed) {
      assert.equal(r.bucket_id, DATASETS);
      assert.match(r.id, UUID);
    }
    for (const p of paths) {
      storageFails(await bucket.download(p), { statusCode: '404', code: 'NoSuchKey' }, `download ${p} after remove`);
    }
    assert.deepEqual(ok(await bucket.list(dir), 'list after remove'), []);
    assert.deepEqual(ok(await bucket.remove(paths), 'remove again'), [], 'removing again removes nothing');
  });

  test('a content type the bucket does not allow (image/png) is refused with 415', async () => {
    const path = `${folder}/picture.png`;
    const res = await bucket.upload(path, Buffer.from('\x89PNG\r\n\x1a\nnot really'), { contentType: 'image/png' });
    storageFails(
      res,
      { statusCode: '415', code: 'InvalidMimeType', message: /mime type image\/png is not supported/ },
      'upload image/png',
    );
    storageFails(await bucket.download(path), { statusCode: '404' }, 'download of the refused upload');
  });
});

describe("storage: another user's folder", () => {
  let a;
  let b;
  let path;
  let bytes;

  before(async () => {
    a = await newUser('storage-owner');
    b = await newUser('storage-other');
    path = `${ownFolder(a, 'private')}/secret.jsonl`;
    bytes = jsonlBytes(3_000, 12);
    ok(await a.client.storage.from(DATASETS).upload(path, bytes, { contentType: JSONL }), 'owner upload');
  });

  test('upload into it is denied (403, RLS)', async () => {
    const intruder = `${a.user.id}/planted-${Date.now()}.jsonl`;
    const res = await b.client.storage.from(DATASETS).upload(intruder, jsonlBytes(100, 13), { contentType: JSONL });
    storageFails(res, { statusCode: '403', code: 'AccessDenied', message: /row-level security/ }, 'upload into another folder');
    const overwrite = await b.client.storage.from(DATASETS).upload(path, jsonlBytes(100, 14), { contentType: JSONL, upsert: true });
    storageFails(overwrite, { statusCode: '403' }, 'upsert over another user\'s object');
    const signed = await b.client.storage.from(DATASETS).createSignedUploadUrl(intruder);
    storageFails(signed, { statusCode: '403' }, 'createSignedUploadUrl in another folder');
    const owner = ok(await a.client.storage.from(DATASETS).list(a.user.id), 'owner lists own root');
    assert.ok(!owner.some((r) => r.name.startsWith('planted-')), 'nothing was planted');
  });

  test('list shows nothing', async () => {
    const folder = path.slice(0, path.lastIndexOf('/'));
    assert.deepEqual(ok(await b.client.storage.from(DATASETS).list(folder), 'list as other'), []);
    assert.deepEqual(ok(await b.client.storage.from(DATASETS).list(a.user.id), 'list root as other'), []);
    // Sanity: the owner sees the file in the same listing.
    const own = ok(await a.client.storage.from(DATASETS).list(folder), 'list as owner');
    assert.deepEqual(own.map((r) => r.name), ['secret.jsonl']);
  });

  test('createSignedUrl fails (not visible: 404)', async () => {
    const res = await b.client.storage.from(DATASETS).createSignedUrl(path, 60);
    storageFails(res, { statusCode: '404', code: 'NoSuchKey' }, 'createSignedUrl as other');
  });

  test('download fails (not visible: 404)', async () => {
    storageFails(await b.client.storage.from(DATASETS).download(path), { statusCode: '404', code: 'NoSuchKey' }, 'download as other');
    // The anon key (no user) gets nothing from a private bucket either.
    const anon = await newClient().storage.from(DATASETS).download(path);
    assert.ok(anon.error, 'anon download of a private object fails');
    assert.equal(anon.data, null);
  });

  test('remove returns [] and the object is still there for its owner', async () => {
    assert.deepEqual(ok(await b.client.storage.from(DATASETS).remove([path]), 'remove as other'), []);
    const got = await downloadedBytes(await a.client.storage.from(DATASETS).download(path), 'owner download after foreign remove');
    assert.ok(got.equals(bytes), 'the owner still gets the original bytes');
  });
});

describe('storage: lora-models is written by service_role and read by the owner only', () => {
  test('a user cannot upload into their own models folder; service_role can, and only the owner reads it', async () => {
    const a = await newUser('models-owner');
    const b = await newUser('models-other');
    const path = `${a.user.id}/job-${Date.now()}/adapter_config.json`;
    const bytes = Buffer.from(JSON.stringify({ r: 16, lora_alpha: 32, target_modules: ['q_proj', 'v_proj'] }));

    const own = await a.client.storage.from(MODELS).upload(path, bytes, { contentType: 'application/json' });
    storageFails(own, { statusCode: '403', code: 'AccessDenied' }, 'user upload into lora-models');

    const service = newClient(SUPABASE_SERVICE_ROLE_KEY).storage.from(MODELS);
    ok(await service.upload(path, bytes, { contentType: 'application/json' }), 'service_role upload');

    const got = await downloadedBytes(await a.client.storage.from(MODELS).download(path), 'owner download');
    assert.ok(got.equals(bytes));
    storageFails(await b.client.storage.from(MODELS).download(path), { statusCode: '404' }, 'other user download');
    assert.deepEqual(ok(await a.client.storage.from(MODELS).remove([path]), 'owner remove (no delete policy)'), []);
    const still = await downloadedBytes(await a.client.storage.from(MODELS).download(path), 'owner download after remove attempt');
    assert.ok(still.equals(bytes), 'the user could not delete the model file');
  });
});
