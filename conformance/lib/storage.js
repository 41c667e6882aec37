// Helpers for the Storage conformance tests (test/storage.test.js, test/tus.test.js):
// deterministic dataset bytes, storage-js error assertions, and tus-js-client plumbing.
// Spec: ../shared/docs/supabase-protocol.md §4 (Storage, TUS) and §5 (tus-js-client).
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import * as tus from 'tus-js-client';
import { SUPABASE_URL } from './helpers.js';

export const DATASETS = 'lora-datasets';
export const MODELS = 'lora-models';
export const CHUNK = 6 * 1024 * 1024; // "must be set to 6MB" (§4.8, §5)
export const TUS_ENDPOINT = `${SUPABASE_URL}/storage/v1/upload/resumable`;
export const TUS_SIGNED_ENDPOINT = `${SUPABASE_URL}/storage/v1/upload/resumable/sign`;

/** A fresh folder `<user id>/<label>-<uuid>` in the user's own area of a bucket. */
export function ownFolder(u, label = 'conf') {
  return `${u.user.id}/${label}-${randomUUID()}`;
}

/**
 * `size` bytes of JSONL, deterministic in `seed`: every line carries its number and a PRNG word,
 * so a lost, repeated or shifted range changes the SHA-256. Generated in memory, never on disk.
 */
export function jsonlBytes(size, seed = 1) {
  const buf = Buffer.allocUnsafe(size);
  let x = (seed >>> 0) || 0x9e3779b9;
  let pos = 0;
  for (let n = 0; pos < size; n++) {
    // xorshift32
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const line = `{"n":${n},"prompt":"p${x.toString(16)}","completion":"c${((x ^ n) >>> 0).toString(36)}"}\n`;
    pos += buf.write(line, pos, 'latin1');
  }
  if (size > 0) buf[size - 1] = 0x0a;
  return buf;
}

export function sha256(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Bytes of a supabase-js download() result (a Blob), asserting success. */
export async function downloadedBytes(res, what) {
  if (res.error != null) {
    assert.fail(`${what}: expected success, got error ${storageErrorText(res.error)}`);
  }
  assert.ok(res.data instanceof Blob, `${what}: expected a Blob, got ${res.data}`);
  return Buffer.from(await res.data.arrayBuffer());
}

export function storageErrorText(error) {
  if (error == null) return String(error);
  const f = {};
  for (const k of ['name', 'message', 'status', 'statusCode', 'code']) {
    if (error[k] !== undefined) f[k] = error[k];
  }
  return JSON.stringify(f);
}

/**
 * Asserts a storage-js StorageApiError. Storage answers HTTP 400 for every non-5xx error and puts
 * the logical status, as a string, in the body's `statusCode` (§4.1); `code` per the §4.1 table.
 */
export function storageFails(res, { statusCode, code, status = 400, message }, what) {
  if (res.error == null) {
    assert.fail(`${what}: expected storage error ${statusCode}, got success with data ${JSON.stringify(res.data)}`);
  }
  const e = res.error;
  const text = storageErrorText(e);
  assert.equal(e.name, 'StorageApiError', `${what}: error class; error was ${text}`);
  assert.equal(e.statusCode, statusCode, `${what}: statusCode; error was ${text}`);
  if (status !== undefined) assert.equal(e.status, status, `${what}: HTTP status; error was ${text}`);
  if (code !== undefined) assert.equal(e.code, code, `${what}: code; error was ${text}`);
  if (message !== undefined) assert.match(e.message, message, `${what}: message; error was ${text}`);
  return e;
}

/**
 * tus-js-client needs a urlStorage in Node for findPreviousUploads()/resumeFromPreviousUpload().
 * This in-memory one implements the same interface as its FileUrlStorage and is shared between
 * the Upload objects of one test, as an app's persistent storage would be across restarts.
 */
export class MemoryUrlStorage {
  constructor() {
    this.items = new Map();
    this.next = 1;
  }
  async findAllUploads() {
    return [...this.items.entries()].map(([key, v]) => ({ ...v, urlStorageKey: key }));
  }
  async findUploadsByFingerprint(fingerprint) {
    const prefix = `tus::${fingerprint}::`;
    return (await this.findAllUploads()).filter((u) => u.urlStorageKey.startsWith(prefix));
  }
  async removeUpload(urlStorageKey) {
    this.items.delete(urlStorageKey);
  }
  async addUpload(fingerprint, upload) {
    const key = `tus::${fingerprint}::${this.next++}`;
    this.items.set(key, structuredClone(upload));
    return key;
  }
}

/**
 * Supabase's documented tus-js-client options (§5), plus a request log: every request's method,
 * URL and Upload-Offset, and every response's status and TUS headers.
 */
export function supabaseTusOptions({ endpoint = TUS_ENDPOINT, headers, bucketName, objectName, contentType, urlStorage, log }) {
  return {
    endpoint,
    retryDelays: [0, 3000, 5000, 10000, 20000],
    headers,
    uploadDataDuringCreation: true,
    removeFingerprintOnSuccess: true,
    metadata: { bucketName, objectName, contentType, cacheControl: '3600' },
    chunkSize: CHUNK,
    urlStorage,
    onBeforeRequest(req) {
      log.push({ kind: 'request', method: req.getMethod(), url: req.getURL(), offset: req.getHeader('Upload-Offset') });
    },
    onAfterResponse(req, res) {
      log.push({
        kind: 'response',
        method: req.getMethod(),
        url: req.getURL(),
        status: res.getStatus(),
        offset: res.getHeader('Upload-Offset'),
        location: res.getHeader('Location'),
        body: res.getStatus() >= 300 ? res.getBody() : undefined,
      });
    },
  };
}

/** Runs a tus.Upload to completion; rejects with tus-js-client's error (incl. the response body). */
export function runToCompletion(upload, { resumeFrom } = {}) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = () => resolve(upload);
    upload.options.onError = (err) => reject(err);
    if (resumeFrom) upload.resumeFromPreviousUpload(resumeFrom);
    upload.start();
  });
}

/**
 * Starts a tus.Upload and aborts it (upload.abort(), no termination) from onProgress as soon as
 * more than `fraction` of the bytes are sent and a PATCH body is in flight (the progress value is
 * not a chunk boundary), so the server sees a request body that breaks off, as on a dropped
 * connection. Resolves with the progress value at the abort (bytes handed to the socket, an upper
 * bound of what the server can have received) and the offset the server had confirmed by then.
 */
export function startAndAbortAfter(upload, fraction) {
  return new Promise((resolve, reject) => {
    let aborted = false;
    let accepted = 0;
    upload.options.onChunkComplete = (_chunk, bytesAccepted) => {
      accepted = bytesAccepted;
    };
    upload.options.onProgress = (sent, total) => {
      const midChunk = sent % upload.options.chunkSize !== 0 && sent !== total;
      if (aborted || sent <= total * fraction || !midChunk) return;
      aborted = true;
      upload.abort().then(() => resolve({ sentAtAbort: sent, acceptedAtAbort: accepted }), reject);
    };
    upload.options.onSuccess = () => reject(new Error('upload finished before it could be aborted half-way'));
    upload.options.onError = (err) => reject(err);
    upload.start();
  });
}

export { tus };
