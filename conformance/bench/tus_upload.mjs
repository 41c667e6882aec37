// The tus-js-client peer of `cargo xtask bench validate`: one file uploaded to brightrun-stack's
// TUS endpoint with the options Supabase documents (6 MiB chunks, uploadDataDuringCreation,
// retry delays, bucket/object/contentType/cacheControl metadata), streamed from disk as a
// Node app would. Prints the seconds from start() to onSuccess.
//
// Usage: node bench/tus_upload.mjs FILE URL ANON_KEY ACCESS_TOKEN OBJECT_NAME
import fs from 'node:fs';
import * as tus from 'tus-js-client';

const [file, url, anonKey, accessToken, objectName] = process.argv.slice(2);
if (!objectName) {
  console.error('usage: node bench/tus_upload.mjs FILE URL ANON_KEY ACCESS_TOKEN OBJECT_NAME');
  process.exit(2);
}
const size = fs.statSync(file).size;
const started = process.hrtime.bigint();
await new Promise((resolve, reject) => {
  const upload = new tus.Upload(fs.createReadStream(file), {
    endpoint: `${url}/storage/v1/upload/resumable`,
    retryDelays: [0, 3000, 5000, 10000, 20000],
    headers: { authorization: `Bearer ${accessToken}`, apikey: anonKey, 'x-upsert': 'true' },
    uploadDataDuringCreation: true,
    removeFingerprintOnSuccess: true,
    metadata: { bucketName: 'lora-datasets', objectName, contentType: 'application/jsonl', cacheControl: '3600' },
    chunkSize: 6 * 1024 * 1024,
    uploadSize: size,
    onError: reject,
    onSuccess: resolve,
  });
  upload.start();
});
console.log(JSON.stringify({ seconds: Number(process.hrtime.bigint() - started) / 1e9, bytes: size }));
